//! The container log store behind `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
//!
//! The simulated kubelet appends what a container writes with [`PodLogs::append`]; the API server
//! serves it (with `container`, `tailLines`, `limitBytes` and `follow`). A container that has no
//! entry yet is "waiting to start", as kube-apiserver reports it.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

type LogKey = (String, String, String);

/// Container output by namespace, pod and container.
#[derive(Debug)]
pub struct PodLogs {
    logs: Mutex<HashMap<LogKey, Vec<u8>>>,
    /// Bumped on every append, so followers wake up.
    changed: watch::Sender<u64>,
}

impl Default for PodLogs {
    fn default() -> Self {
        PodLogs {
            logs: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl PodLogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LogKey, Vec<u8>>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a container as started (its log exists, possibly empty).
    pub fn start(&self, namespace: &str, pod: &str, container: &str) {
        self.lock()
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default();
        self.changed.send_modify(|n| *n += 1);
    }

    /// Appends a chunk of a container's output.
    pub fn append(&self, namespace: &str, pod: &str, container: &str, chunk: &[u8]) {
        self.lock()
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default()
            .extend_from_slice(chunk);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The whole log of a container, or None when the container has not started.
    pub fn read(&self, namespace: &str, pod: &str, container: &str) -> Option<Vec<u8>> {
        self.lock()
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
    }

    /// Forgets every log of a pod (called when the pod is deleted).
    pub fn remove_pod(&self, namespace: &str, pod: &str) {
        self.lock()
            .retain(|(ns, p, _), _| !(ns == namespace && p == pod));
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever any log grows (for `follow=true`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The last `n` lines of a log.
pub fn tail_lines(log: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &log[log.len()..];
    }
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &log[i + 1..];
            }
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\n", 5), b"a\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }

    #[test]
    fn unstarted_container_has_no_log() {
        let logs = PodLogs::default();
        assert!(logs.read("ns", "p", "c").is_none());
        logs.append("ns", "p", "c", b"hi\n");
        assert_eq!(logs.read("ns", "p", "c").unwrap(), b"hi\n");
        logs.remove_pod("ns", "p");
        assert!(logs.read("ns", "p", "c").is_none());
    }
}
