//! Resident memory of version processes, read from `VmRSS` in `/proc/<pid>/status` while a
//! canary's analysis window runs. A version's memory is that of its process and every process
//! below it (a run command such as `sh -c …` or a server that forks workers leaks in its
//! children), found through `/proc/<pid>/task/<tid>/children`. Linux only: where `/proc` cannot
//! be read (another OS, a process already gone) a reading is missing and the memory check has
//! nothing to judge.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::analysis::MemorySeries;
use crate::process::Process;

/// At most this many processes are summed for one version (a fork bomb is not walked whole).
const MAX_TREE: usize = 4096;

/// The resident memory of `pid` and its descendants in bytes, or `None` when `pid` itself
/// cannot be read.
pub(crate) async fn resident_bytes(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let own = process_rss(pid).await?;
    let mut seen = BTreeSet::from([pid]);
    let mut queue = children(pid).await;
    let mut total = own;
    while let Some(child) = queue.pop() {
        if seen.len() >= MAX_TREE || !seen.insert(child) {
            continue;
        }
        // A child that exits between listing and reading counts as nothing.
        if let Some(bytes) = process_rss(child).await {
            total = total.saturating_add(bytes);
            queue.extend(children(child).await);
        }
    }
    Some(total)
}

async fn process_rss(pid: u32) -> Option<u64> {
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .ok()?;
    parse_vm_rss(&status)
}

/// The direct children of every thread of `pid`.
async fn children(pid: u32) -> Vec<u32> {
    let Ok(mut tasks) = tokio::fs::read_dir(format!("/proc/{pid}/task")).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Ok(Some(task)) = tasks.next_entry().await {
        if let Ok(list) = tokio::fs::read_to_string(task.path().join("children")).await {
            out.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
    }
    out
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

    #[tokio::test]
    async fn counts_the_children_of_a_process_too() {
        let mut shell = tokio::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .kill_on_drop(true)
            .spawn()
            .expect("sh runs");
        let pid = shell.id().expect("a running shell has a pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while children(pid).await.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the shell never started its children"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let own = process_rss(pid).await.expect("the shell's own memory");
        let tree = resident_bytes(pid).await.expect("the tree's memory");
        let mut sleepers = 0;
        for child in children(pid).await {
            sleepers += process_rss(child).await.unwrap_or(0);
        }
        assert!(sleepers > 0);
        assert!(
            tree >= own + sleepers / 2,
            "own {own}, tree {tree}, children {sleepers}"
        );
        shell.kill().await.ok();
    }
}
