//! Resident memory of version processes, read from `VmRSS` in `/proc/<pid>/status` while a
//! canary's analysis window runs. Linux only: where `/proc` cannot be read (another OS, a process
//! already gone) a reading is missing and the memory check has nothing to judge.

use std::time::{Duration, Instant};

use crate::analysis::MemorySeries;
use crate::process::Process;

/// The resident memory of `pid` in bytes, or `None` when it cannot be read.
pub(crate) async fn resident_bytes(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:     6144 kB` → 6291456.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim();
    let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Waits `window`, reading the resident memory of `canary` and `stable` at its start, every
/// `interval`, and at its end. A zero `interval` only waits.
pub(crate) async fn watch_window(
    canary: &Process,
    stable: &Process,
    interval: Duration,
    window: Duration,
) -> (MemorySeries, MemorySeries) {
    let (mut canary_series, mut stable_series) = (MemorySeries::default(), MemorySeries::default());
    if interval.is_zero() {
        tokio::time::sleep(window).await;
        return (canary_series, stable_series);
    }
    let started = Instant::now();
    loop {
        let (canary_rss, stable_rss) =
            tokio::join!(resident_bytes(canary.pid()), resident_bytes(stable.pid()));
        let at = started.elapsed();
        canary_series.push(at, canary_rss);
        stable_series.push(at, stable_rss);
        let Some(left) = window.checked_sub(at).filter(|left| !left.is_zero()) else {
            return (canary_series, stable_series);
        };
        tokio::time::sleep(left.min(interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status =
            "Name:\tpayment-service\nVmPeak:\t  123456 kB\nVmRSS:\t    6144 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(6144 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[tokio::test]
    async fn reads_this_process_and_not_a_missing_one() {
        let own = resident_bytes(std::process::id()).await;
        assert!(own.is_some_and(|bytes| bytes > 0), "{own:?}");
        assert_eq!(resident_bytes(0).await, None);
        assert_eq!(resident_bytes(u32::MAX).await, None);
    }
}
