//! Process-level gauges read from /proc at scrape time (cheap, and only when scraped).
//!
//! The files are opened once and read again from their start at each scrape (procfs generates
//! them anew): a scrape taken while a flood holds every descriptor the process may open still
//! reports them, and `process_open_fds` is the gauge that matters then.

use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};

/// `/proc/self/...` handles, opened at the first scrape (a failed open is retried at the next).
#[derive(Default)]
struct Held {
    stat: Option<std::fs::File>,
    status: Option<std::fs::File>,
    limits: Option<std::fs::File>,
    fd_dir: Option<nix::dir::Dir>,
}

fn held() -> std::sync::MutexGuard<'static, Held> {
    static HELD: OnceLock<Mutex<Held>> = OnceLock::new();
    HELD.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole of `/proc/self/<name>`, read through `slot`'s handle.
fn read(slot: &mut Option<std::fs::File>, name: &str) -> Option<String> {
    if slot.is_none() {
        *slot = std::fs::File::open(format!("/proc/self/{name}")).ok();
    }
    let file = slot.as_ref()?;
    let mut out = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, out.len() as u64).ok()?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(out).ok()
}

/// Resident memory in bytes (`VmRSS`).
pub fn resident_bytes() -> Option<u64> {
    let status = read(&mut held().status, "status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time in seconds. /proc reports it in USER_HZ ticks, which Linux fixes
/// at 100 for user space whatever the kernel's own tick rate.
pub fn cpu_seconds() -> Option<f64> {
    let stat = read(&mut held().stat, "stat")?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Open descriptors, the directory's own handle left out.
pub fn open_fds() -> Option<u64> {
    use nix::fcntl::OFlag;
    let mut held = held();
    if held.fd_dir.is_none() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        held.fd_dir = nix::dir::Dir::open("/proc/self/fd", flags, nix::sys::stat::Mode::empty()).ok();
    }
    let dir = held.fd_dir.as_mut()?;
    // The iterator rewinds when dropped: the next scrape lists the table anew.
    let entries = dir
        .iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_bytes() != b"." && e.file_name().to_bytes() != b"..")
        .count();
    Some(entries.saturating_sub(1) as u64)
}

pub fn max_fds() -> Option<u64> {
    let limits = read(&mut held().limits, "limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        assert!(super::resident_bytes().unwrap() > 0);
        assert!(super::cpu_seconds().is_some());
        assert!(super::open_fds().unwrap() > 0);
        assert!(super::max_fds().unwrap() > 0);
    }

    #[test]
    fn held_files_are_read_anew_each_time() {
        // The directory handle rewinds: a second count is a whole count again, not the end.
        assert!(super::open_fds().unwrap() > 0 && super::open_fds().unwrap() > 0);
        let cpu = super::cpu_seconds().unwrap();
        let spin = std::time::Instant::now();
        while super::cpu_seconds().unwrap() <= cpu {
            assert!(spin.elapsed() < std::time::Duration::from_secs(10), "stat never moved");
        }
    }
}
