//! The resource use of the pods' containers, as the kubelet's summary (cAdvisor) reports it to
//! metrics-server: each container's CPU rate over the last resolution window and its working set.
//!
//! A container here is a process group (the kubelet starts each container's process as the leader
//! of its own group, and reports it to [`crate::connect::exec::RunningContainers`]), so its use is
//! the sum over the group's processes in `/proc`:
//! `utime + stime` of `/proc/<pid>/stat` (in clock ticks of `USER_HZ`, which Linux fixes at 100 for
//! user space, `proc(5)`), and `VmRSS` of `/proc/<pid>/status` as the working set. The CPU rate
//! needs two samples, so a container appears in the metrics one resolution after it started, as
//! with metrics-server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::connect::exec::ContainerKey;
use crate::pod_metrics::{ContainerUsage, PodUsage};

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// What `/proc/<pid>/stat` says of a process: its group and its CPU time in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatLine {
    /// `pgrp` (field 5).
    pub group: i32,
    /// `utime + stime` (fields 14 and 15), in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<StatLine> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), ..., utime (14), stime (15).
    let field = |number: usize| fields.get(number - 3).copied();
    Some(StatLine {
        group: field(5)?.parse().ok()?,
        cpu_ticks: field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?,
    })
}

/// The resident memory `VmRSS` of `/proc/<pid>/status`, in bytes (absent for kernel threads).
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU ticks and resident bytes of each process group in `groups`, summed over `/proc`.
fn read_groups(groups: &[i32]) -> HashMap<i32, (u64, u64)> {
    let mut totals: HashMap<i32, (u64, u64)> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return totals;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_pid = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        let Some(stat) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        else {
            continue;
        };
        if !groups.contains(&stat.group) {
            continue;
        }
        let rss = std::fs::read_to_string(path.join("status"))
            .ok()
            .as_deref()
            .and_then(parse_rss_bytes)
            .unwrap_or(0);
        let total = totals.entry(stat.group).or_default();
        total.0 += stat.cpu_ticks;
        total.1 += rss;
    }
    totals
}

/// The CPU rate between two readings of a container's ticks, in nanocores.
pub fn nanocores(ticks_before: u64, ticks_now: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0;
    }
    let cpu_seconds = ticks_now.saturating_sub(ticks_before) as f64 / USER_HZ as f64;
    (cpu_seconds / seconds * 1e9) as u64
}

/// Samples every running container's use each `resolution` into the cluster's metrics until
/// `shutdown`.
pub async fn run_sampler(
    cluster: Arc<crate::Cluster>,
    resolution: Duration,
    shutdown: CancellationToken,
) {
    cluster.pod_metrics().enable();
    let mut previous: HashMap<ContainerKey, (i32, u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(resolution);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let running = cluster.running_containers().processes();
        let groups: Vec<i32> = running.iter().map(|(_, group)| *group).collect();
        let totals = tokio::task::spawn_blocking(move || read_groups(&groups))
            .await
            .unwrap_or_default();
        let now = Instant::now();
        let timestamp = jiff::Timestamp::now().to_string();
        let mut pods: BTreeMap<(String, String), PodUsage> = BTreeMap::new();
        let mut next = HashMap::new();
        for (key, group) in running {
            let Some(&(ticks, rss)) = totals.get(&group) else {
                continue;
            };
            if let Some(&(before_group, before_ticks, before_at)) = previous.get(&key)
                && before_group == group
            {
                let window = now.duration_since(before_at);
                pods.entry((key.0.clone(), key.1.clone()))
                    .or_insert_with(|| PodUsage {
                        timestamp: timestamp.clone(),
                        window_seconds: window.as_secs_f64().round() as u64,
                        containers: Vec::new(),
                    })
                    .containers
                    .push(ContainerUsage {
                        name: key.2.clone(),
                        cpu_nanocores: nanocores(before_ticks, ticks, window),
                        memory_bytes: rss,
                    });
            }
            next.insert(key, (group, ticks, now));
        }
        previous = next;
        cluster.pod_metrics().replace(pods);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (kumiko (app) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    4 0 123 1000000 2000 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(StatLine {
                group: 4242,
                cpu_ticks: 300
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tkumiko-app\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(parse_rss_bytes("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_cpu_rate_is_ticks_over_wall_time() {
        // 150 ticks = 1.5 CPU seconds over 3 s: half a core.
        assert_eq!(nanocores(100, 250, Duration::from_secs(3)), 500_000_000);
        assert_eq!(nanocores(250, 100, Duration::from_secs(3)), 0, "a restart");
        assert_eq!(nanocores(0, 10, Duration::ZERO), 0);
    }

    #[test]
    fn this_process_is_found_in_proc_with_its_group() {
        let group = nix::unistd::getpgrp().as_raw();
        let totals = read_groups(&[group]);
        let (_, rss) = totals.get(&group).copied().expect("this process's group");
        assert!(rss > 0, "the test process has resident memory");
    }
}
