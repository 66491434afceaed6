//! Gives freed heap memory back to the OS after a spike.
//!
//! glibc's malloc keeps what a spike freed (a 200,000-key MGET, a 20 MB statement) in its
//! arenas: the resident set stayed at 3.4× idle after the abuse suite although Pake held
//! none of it. Every [`EVERY`], when the resident set has grown more than [`SLACK_KIB`] past
//! where the last trim left it, `malloc_trim(0)` hands the free pages of every arena back
//! (glibc ≥ 2.8 releases whole free pages inside arenas, not only the top of the heap).
//! It runs on a blocking thread: it locks each arena in turn while it walks it.
//!
//! `malloc_trim` cannot reach everything: it returns free pages inside each arena, but the
//! free *top* of a thread arena only goes back when a `free` finds it past
//! `M_TRIM_THRESHOLD` — and glibc raises that threshold (to twice the size) each time a
//! large mmapped block is freed, so after one 20 MB statement or one wide reply a worker's
//! arena kept 15–20 MB for good. [`tune`] fixes both thresholds at start, which turns the
//! raising off: blocks of [`MMAP_THRESHOLD`] and more are mapped and unmapped on their own,
//! and an arena's free top past [`TRIM_THRESHOLD`] goes back at once.
//! Growth is seen in the resident set; memory freed without growth first (2,000 stalled
//! logins closing, each session's buffers back in the arenas) is seen in malloc's own count
//! of free bytes (`mallinfo2`), which trimmed pages stay in — so the trigger is that count
//! rising [`SLACK_KIB`] past where the last trim left it. The slack was 4 MiB: a trim that
//! came while a spike was still being freed (connections closing over seconds) left the
//! rest resident when the later frees stayed under it (abuse suite, 2,000 stalled logins:
//! 24 MB settled in one run, 18 MB in another), and so did memory a spike touched again
//! between two looks. At most one trim per [`EVERY`] either way.
//! `PAKE_MALLOC_TRIM=0` turns all of it off (to measure the difference); glibc's own
//! `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` environment variables still win.

use std::time::Duration;

/// How often the resident set is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Growth of the resident set, or of malloc's free bytes, past the last trim's result
/// that is worth a trim.
const SLACK_KIB: u64 = 1 << 10;

/// Blocks this large and larger get their own mapping, given back when freed.
pub const MMAP_THRESHOLD: usize = 512 << 10;
/// An arena's free top past this is given back when a block is freed.
pub const TRIM_THRESHOLD: usize = 2 << 20;

fn enabled() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
        && !std::env::var("PAKE_MALLOC_TRIM").is_ok_and(|v| v == "0")
}

/// Fix glibc's thresholds (see the module docs); call before threads start.
pub fn tune() {
    if !enabled() {
        return;
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        set(MMAP_THRESHOLD_PARAM, MMAP_THRESHOLD);
    }
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        set(TRIM_THRESHOLD_PARAM, TRIM_THRESHOLD);
    }
}

/// Start the trimmer on the current runtime (a no-op where malloc is not glibc's).
pub fn spawn() {
    if !enabled() {
        return;
    }
    tokio::spawn(async {
        let pid = std::process::id();
        let mut floor = crate::bench::idle::vm_rss_kib(pid).unwrap_or(0);
        // free bytes malloc held after the last trim: memory freed since (2,000 stalled
        // logins closing) does not show in the resident set until something trims it
        let mut freed_floor = free_kib().unwrap_or(0);
        loop {
            tokio::time::sleep(EVERY).await;
            let Some(now) = crate::bench::idle::vm_rss_kib(pid) else {
                continue;
            };
            let free = tokio::task::spawn_blocking(free_kib).await.ok().flatten();
            let grew = now > floor.saturating_add(SLACK_KIB);
            let freed = free.is_some_and(|f| f > freed_floor.saturating_add(SLACK_KIB));
            if !grew && !freed {
                floor = floor.min(now);
                freed_floor = free.map_or(freed_floor, |f| f.min(freed_floor));
                continue;
            }
            let _ = tokio::task::spawn_blocking(trim).await;
            let after = crate::bench::idle::vm_rss_kib(pid).unwrap_or(now);
            tracing::debug!(before_kib = now, after_kib = after, free_kib = ?free, "malloc_trim");
            floor = after;
            freed_floor = free.unwrap_or(freed_floor);
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes an integer and only reorganises malloc's own free lists
    // under its own locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Bytes (KiB) malloc holds free in its arenas (trimmed pages included: they stay free).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn free_kib() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and reads malloc's statistics under its locks.
    let info = unsafe { libc::mallinfo2() };
    Some(info.fordblks as u64 / 1024)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_kib() -> Option<u64> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_PARAM: i32 = libc::M_MMAP_THRESHOLD;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_PARAM: i32 = libc::M_TRIM_THRESHOLD;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const MMAP_THRESHOLD_PARAM: i32 = 0;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const TRIM_THRESHOLD_PARAM: i32 = 0;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set(param: i32, value: usize) {
    let value = i32::try_from(value).unwrap_or(i32::MAX);
    // SAFETY: mallopt takes two integers and changes malloc's parameters under its own
    // lock; it is safe to call at any time.
    let ok = unsafe { libc::mallopt(param, value) };
    if ok != 1 {
        tracing::warn!(param, value, "mallopt refused a malloc parameter");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_param: i32, _value: usize) {}
