//! What the bench reads from `/proc` around each measured window: the CPU time of a target's
//! process (and its children: a direct Postgres is a postmaster with one backend per
//! client), the load generator's own CPU, the machine's load average and busy share, and
//! the process listening on a local TCP port (for targets given by URL without `--pid`).
//! Linux only; every reader returns `None` where `/proc` does not say.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`.
#[allow(unsafe_code)]
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the running system and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields after the command name of a `/proc/PID/stat` line (the name may hold spaces
/// and parentheses, so split at the last `)`); field 3 of the man page is `rest[0]`.
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let close = text.rfind(')')?;
    Some(text.get(close + 1..)?.split_whitespace().collect())
}

/// (parent pid, utime + stime in ticks) of one process.
fn parent_and_ticks(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&text)?;
    // man proc: (4) ppid, (14) utime, (15) stime → rest[1], rest[11], rest[12]
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU seconds (user + system) used so far by `pid` and every descendant alive now.
pub fn tree_cpu_secs(pid: u32) -> Option<f64> {
    let (_, own) = parent_and_ticks(pid)?;
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, t)) = parent_and_ticks(p) {
                children.entry(ppid).or_default().push((p, t));
            }
        }
    }
    let (mut total, mut stack) = (own, vec![pid]);
    while let Some(p) = stack.pop() {
        for &(child, t) in children.get(&p).map_or(&[][..], Vec::as_slice) {
            total += t;
            stack.push(child);
        }
    }
    Some(total as f64 / ticks_per_sec())
}

/// CPU seconds used so far by this process (the load generator), all threads.
pub fn self_cpu_secs() -> Option<f64> {
    parent_and_ticks(std::process::id()).map(|(_, t)| t as f64 / ticks_per_sec())
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// (busy, total) jiffies of all CPUs since boot, from the first line of `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is already in user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// A snapshot taken before a measured window; [`Window::end`] turns it into figures.
pub struct Window {
    at: Instant,
    pid: Option<(u32, f64)>,
    own: Option<f64>,
    jiffies: Option<(u64, u64)>,
    pub loadavg: Option<[f64; 3]>,
}

/// What happened on the machine during one measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowFigures {
    /// CPU seconds of the target's process tree (None: no pid, or not readable).
    pub target_cpu_secs: Option<f64>,
    /// Cores the load generator kept busy on average (CPU seconds ÷ wall seconds).
    pub loadgen_cores: Option<f64>,
    /// Share of all cores busy (any process), 0..=1.
    pub machine_busy: Option<f64>,
    pub loadavg_before: Option<[f64; 3]>,
    pub loadavg_after: Option<[f64; 3]>,
}

impl Window {
    pub fn start(pid: Option<u32>) -> Window {
        Window {
            at: Instant::now(),
            pid: pid.and_then(|p| Some((p, tree_cpu_secs(p)?))),
            own: self_cpu_secs(),
            jiffies: cpu_jiffies(),
            loadavg: loadavg(),
        }
    }

    pub fn end(self) -> WindowFigures {
        let wall = self.at.elapsed().as_secs_f64();
        let target_cpu_secs = self
            .pid
            .and_then(|(p, before)| Some((tree_cpu_secs(p)? - before).max(0.0)));
        let loadgen_cores = self
            .own
            .zip(self_cpu_secs())
            .filter(|_| wall > 0.0)
            .map(|(b, a)| (a - b).max(0.0) / wall);
        let machine_busy = self.jiffies.zip(cpu_jiffies()).and_then(|(b, a)| {
            let total = a.1.checked_sub(b.1).filter(|t| *t > 0)?;
            Some(a.0.saturating_sub(b.0) as f64 / total as f64)
        });
        WindowFigures {
            target_cpu_secs,
            loadgen_cores,
            machine_busy,
            loadavg_before: self.loadavg,
            loadavg_after: loadavg(),
        }
    }
}

/// The pid of the process listening on TCP `addr` on this machine, if it is local and
/// `/proc` lets us see it (another user's `/proc/PID/fd` needs root).
pub fn listening_pid(addr: SocketAddr) -> Option<u32> {
    if !is_local(addr) {
        return None;
    }
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listen_inodes(&text, addr.port()));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

fn is_local(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    // an address of one of this machine's interfaces shows up as a local listener
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .any(|text| {
            text.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(parse_hex_addr)
                    .is_some_and(|a| a.ip() == ip)
            })
        })
}

/// Socket inodes in state LISTEN (0A) on `port` in a `/proc/net/tcp{,6}` table.
fn listen_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = parse_hex_addr(f.get(1)?)?;
            (local.port() == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// `0100007F:1F90` (IPv4, or 32 hex digits for IPv6) as the kernel prints it: each 32-bit
/// word in host (little-endian) order.
fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes);
            std::net::Ipv6Addr::from(b).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 11 0 0 20 0 1";
        let f = stat_fields(line).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "1");
        assert_eq!((f[11], f[12]), ("37", "11"));
    }

    #[test]
    fn proc_addresses_decode() {
        assert_eq!(
            parse_hex_addr("0100007F:1F90").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_hex_addr("00000000000000000000000001000000:0050").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_hex_addr("zz:1").is_none());
    }

    #[test]
    fn loadavg_and_cpu_lines_parse() {
        assert_eq!(
            parse_loadavg("1.50 0.75 0.25 3/400 999\n"),
            Some([1.5, 0.75, 0.25])
        );
        assert_eq!(
            parse_cpu_line("cpu  100 0 50 800 50 0 0 0 0 0"),
            Some((150, 1000))
        );
        assert_eq!(parse_cpu_line("intr 1 2"), None);
    }

    #[test]
    fn own_cpu_grows_with_work_and_the_listener_is_found() {
        let before = self_cpu_secs().expect("own /proc/self/stat");
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = self_cpu_secs().expect("own /proc/self/stat");
        assert!(after > before, "{before} → {after}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listening_pid(addr), Some(std::process::id()));
        // a remote address (TEST-NET-1) is never looked up locally
        let remote = SocketAddr::from(([192, 0, 2, 1], addr.port()));
        assert_eq!(listening_pid(remote), None);
        assert!(tree_cpu_secs(std::process::id()).unwrap() >= after);
    }
}
