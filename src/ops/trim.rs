//! Gives freed heap memory back to the OS after a spike.
//!
//! glibc's malloc keeps what a spike freed (a 200,000-key MGET, a 20 MB statement) in its
//! arenas: the resident set stayed at 3.4× idle after the abuse suite although Pake held
//! none of it. Every [`EVERY`], when the resident set has grown more than [`SLACK`] past
//! where the last trim left it, `malloc_trim(0)` hands the free pages of every arena back
//! (glibc ≥ 2.8 releases whole free pages inside arenas, not only the top of the heap).
//! It runs on a blocking thread: it locks each arena in turn while it walks it.
//! `PAKE_MALLOC_TRIM=0` turns it off (to measure the difference).

use std::time::Duration;

/// How often the resident set is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Growth past the last trim's result that is worth a trim.
const SLACK_KIB: u64 = 16 << 10;

/// Start the trimmer on the current runtime (a no-op where malloc is not glibc's).
pub fn spawn() {
    if std::env::var("PAKE_MALLOC_TRIM").is_ok_and(|v| v == "0") {
        return;
    }
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    tokio::spawn(async {
        let pid = std::process::id();
        let mut floor = crate::bench::idle::vm_rss_kib(pid).unwrap_or(0);
        loop {
            tokio::time::sleep(EVERY).await;
            let Some(now) = crate::bench::idle::vm_rss_kib(pid) else {
                continue;
            };
            if now <= floor.saturating_add(SLACK_KIB) {
                floor = floor.min(now);
                continue;
            }
            let _ = tokio::task::spawn_blocking(trim).await;
            let after = crate::bench::idle::vm_rss_kib(pid).unwrap_or(now);
            tracing::debug!(before_kib = now, after_kib = after, "malloc_trim");
            floor = after;
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
