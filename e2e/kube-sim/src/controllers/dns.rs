//! Service names, resolved as a pod's DNS resolver resolves them on a real cluster.
//!
//! Kubernetes' DNS ("DNS for Services and Pods", kubernetes.io/docs/concepts/services-networking/
//! dns-pod-service/) gives each Service the record `<svc>.<ns>.svc.cluster.local`, and each pod
//! the search path `<pod ns>.svc.cluster.local svc.cluster.local cluster.local`. So from a pod:
//! - `<svc>` resolves only for a Service of the pod's own namespace;
//! - `<svc>.<ns>`, `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local` resolve from every
//!   namespace;
//! - a Service of another namespace named short does not resolve.
//!
//! kube-sim has no DNS server: it writes one hosts file per namespace holding exactly those
//! names, each at the Service's ClusterIP (a loopback address where the Service proxy listens on
//! the Service's own ports), and the kubelet bind-mounts the pod's namespace's file on
//! `/etc/hosts` in the container process's own mount namespace. Files are rewritten in place (the
//! same inode), so the bind mounts of running pods see every change.
//!
//! A namespace gets its file when the kubelet first asks for it (a pod there runs a process), not
//! when a Service appears in it: every file names every Service, so a file per namespace with a
//! Service would make each Service change rewrite as many files as there are namespaces, each as
//! long as there are Services (at 1,000 namespaces, each Service change rewrote a thousand files of
//! a thousand lines or more, and kept them all in memory).
//!
//! Programs outside pods do not resolve Service names, as outside a real cluster; the e2e harness
//! can give its own process (run in a private mount namespace) the fully-qualified names through
//! [`crate::controllers::ControllersConfig::process_hosts_file`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::{Error, Result};

/// The cluster domain kube-sim's names use (Kubernetes' default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The first lines of every pod's hosts file, as the kubelet writes them.
const POD_HEADER: &str = "# Kubernetes-managed hosts file (kube-sim).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The line that starts kube-sim's part of the process hosts file.
const PROCESS_MARKER: &str = "# kube-sim Services (fully qualified)";

/// A Service that has a name in DNS: its namespace, name and ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRecord {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Its ClusterIP.
    pub ip: Ipv4Addr,
}

/// The hosts file of a pod in `namespace`: every Service by `<svc>.<ns>`, `<svc>.<ns>.svc` and
/// `<svc>.<ns>.svc.cluster.local`, and those of `namespace` also by `<svc>` (the pod's first
/// search domain). With `namespace` `None` (a program outside every namespace) no short name.
pub fn hosts_content<'a>(
    header: &str,
    records: impl IntoIterator<Item = &'a ServiceRecord>,
    namespace: Option<&str>,
) -> String {
    let mut sorted: Vec<&ServiceRecord> = records.into_iter().collect();
    sorted.sort();
    let mut text = header.to_owned();
    for record in sorted {
        let ServiceRecord {
            namespace: ns,
            name,
            ip,
        } = record;
        text.push_str(&format!(
            "{ip}\t{name}.{ns}.svc.{CLUSTER_DOMAIN} {name}.{ns}.svc {name}.{ns}"
        ));
        if namespace == Some(ns.as_str()) {
            text.push(' ');
            text.push_str(name);
        }
        text.push('\n');
    }
    text
}

/// Replaces the content of `path` in place: the same inode, so a bind mount of it sees the new
/// content. The new bytes are written over the old, then the file is cut to their length, so a
/// reader never finds it empty.
pub fn write_in_place(path: &Path, content: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.rewind()?;
    file.write_all(content.as_bytes())?;
    file.set_len(content.len() as u64)?;
    file.flush()
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, ServiceRecord>,
    namespaces: BTreeSet<String>,
    written: BTreeMap<PathBuf, String>,
}

/// The hosts files of one kube-sim: one per namespace in a directory of its own, and optionally
/// the process's own (fully-qualified names only).
pub struct HostsFiles {
    dir: tempfile::TempDir,
    process: Option<(PathBuf, String)>,
    state: Mutex<State>,
}

impl std::fmt::Debug for HostsFiles {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HostsFiles")
            .field("dir", &self.dir.path())
            .field("process", &self.process.as_ref().map(|(path, _)| path))
            .finish_non_exhaustive()
    }
}

impl HostsFiles {
    /// A new, empty set of files. `process_file`, if given, is the hosts file of this process
    /// (e.g. `/etc/hosts` in a private mount namespace): its lines before kube-sim's marker are
    /// kept, kube-sim's part is rewritten with the Services' fully-qualified names.
    pub fn new(process_file: Option<PathBuf>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kube-sim-hosts-")
            .tempdir()
            .map_err(|source| Error::Io {
                action: "creating the directory of the hosts files".to_owned(),
                source,
            })?;
        let process = match process_file {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                    action: format!("reading the process hosts file {}", path.display()),
                    source,
                })?;
                let header = match text.find(PROCESS_MARKER) {
                    Some(index) => text[..index].to_owned(),
                    None if text.is_empty() || text.ends_with('\n') => text,
                    None => format!("{text}\n"),
                };
                Some((path, format!("{header}{PROCESS_MARKER}\n")))
            }
            None => None,
        };
        let files = HostsFiles {
            dir,
            process,
            state: Mutex::new(State::default()),
        };
        files.rewrite(&mut files.lock())?;
        Ok(files)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn namespace_path(&self, namespace: &str) -> PathBuf {
        self.dir.path().join(format!("{namespace}.hosts"))
    }

    /// The hosts file of the pods of `namespace`, created (current) if it is not yet.
    pub fn for_namespace(&self, namespace: &str) -> Result<PathBuf> {
        let mut state = self.lock();
        state.namespaces.insert(namespace.to_owned());
        self.rewrite(&mut state)?;
        Ok(self.namespace_path(namespace))
    }

    /// Sets (or with `None` removes) the record of the Service with uid `uid`.
    pub fn set(&self, uid: &str, record: Option<ServiceRecord>) -> Result<()> {
        let mut state = self.lock();
        let changed = match record {
            Some(record) => state.records.insert(uid.to_owned(), record.clone()) != Some(record),
            None => state.records.remove(uid).is_some(),
        };
        if changed {
            self.rewrite(&mut state)?;
        }
        Ok(())
    }

    /// Keeps only the records of the Services whose uids are in `uids` (after a relist).
    pub fn retain(&self, uids: &std::collections::HashSet<String>) -> Result<()> {
        let mut state = self.lock();
        let before = state.records.len();
        state.records.retain(|uid, _| uids.contains(uid));
        if state.records.len() != before {
            self.rewrite(&mut state)?;
        }
        Ok(())
    }

    fn rewrite(&self, state: &mut State) -> Result<()> {
        let mut wanted: Vec<(PathBuf, String)> = state
            .namespaces
            .iter()
            .map(|namespace| {
                (
                    self.namespace_path(namespace),
                    hosts_content(POD_HEADER, state.records.values(), Some(namespace)),
                )
            })
            .collect();
        if let Some((path, header)) = &self.process {
            wanted.push((
                path.clone(),
                hosts_content(header, state.records.values(), None),
            ));
        }
        for (path, content) in wanted {
            if state.written.get(&path) == Some(&content) {
                continue;
            }
            write_in_place(&path, &content).map_err(|source| Error::Io {
                action: format!("writing the hosts file {}", path.display()),
                source,
            })?;
            state.written.insert(path, content);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(namespace: &str, name: &str, ip: [u8; 4]) -> ServiceRecord {
        ServiceRecord {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ip: Ipv4Addr::from(ip),
        }
    }

    fn names_of(content: &str, ip: &str) -> Vec<String> {
        content
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(ip))
            .flat_map(|line| line.split_whitespace().skip(1).map(str::to_owned))
            .collect()
    }

    /// kubernetes.io "DNS for Services and Pods": a pod's search path is
    /// `<ns>.svc.cluster.local svc.cluster.local cluster.local`.
    #[test]
    fn short_service_names_resolve_only_in_their_own_namespace() {
        let records = [
            record("shop", "web", [127, 9, 0, 2]),
            record("databases", "pg-rw", [127, 9, 0, 3]),
        ];
        let shop = hosts_content(POD_HEADER, &records, Some("shop"));
        assert_eq!(
            names_of(&shop, "127.9.0.2"),
            [
                "web.shop.svc.cluster.local",
                "web.shop.svc",
                "web.shop",
                "web"
            ]
        );
        assert_eq!(
            names_of(&shop, "127.9.0.3"),
            [
                "pg-rw.databases.svc.cluster.local",
                "pg-rw.databases.svc",
                "pg-rw.databases"
            ]
        );
        assert!(shop.contains("127.0.0.1\tlocalhost"));
        let outside = hosts_content("", &records, None);
        assert!(!names_of(&outside, "127.9.0.2").contains(&"web".to_owned()));
    }

    #[test]
    fn files_are_rewritten_in_place_so_bind_mounts_follow() {
        use std::os::unix::fs::MetadataExt;
        let files = HostsFiles::new(None).unwrap();
        let path = files.for_namespace("shop").unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        files
            .set("uid-1", Some(record("shop", "web", [127, 9, 0, 2])))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("web.shop.svc web.shop web\n"), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        files.set("uid-1", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("web"), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    }

    /// Only namespaces whose pods asked for a file have one, and a file made after the Services
    /// still names all of them.
    #[test]
    fn a_namespace_gets_a_hosts_file_only_when_a_pod_there_asks_for_it() {
        let files = HostsFiles::new(None).unwrap();
        for n in 0..50u8 {
            files
                .set(
                    &format!("uid-{n}"),
                    Some(record(&format!("ns-{n}"), "web", [127, 9, 1, n])),
                )
                .unwrap();
        }
        let on_disk = || std::fs::read_dir(files.dir.path()).unwrap().count();
        assert_eq!(on_disk(), 0, "no pod asked for a file yet");
        let path = files.for_namespace("ns-7").unwrap();
        assert_eq!(on_disk(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().filter(|line| line.contains("web.ns-")).count(),
            50
        );
        assert_eq!(
            names_of(&text, "127.9.1.7").last().map(String::as_str),
            Some("web")
        );
        files
            .set("uid-50", Some(record("ns-50", "web", [127, 9, 1, 50])))
            .unwrap();
        assert_eq!(on_disk(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("web.ns-50.svc"), "{text}");
    }

    #[test]
    fn the_process_file_keeps_its_own_lines_and_gets_qualified_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 localhost\n10.1.2.3 build-host\n").unwrap();
        let files = HostsFiles::new(Some(path.clone())).unwrap();
        files
            .set("uid-1", Some(record("shop", "web", [127, 9, 0, 2])))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("127.0.0.1 localhost\n10.1.2.3 build-host\n"));
        assert_eq!(
            names_of(&text, "127.9.0.2"),
            ["web.shop.svc.cluster.local", "web.shop.svc", "web.shop"]
        );
        // A second kube-sim in the same process replaces kube-sim's part, not the header.
        drop(files);
        let again = HostsFiles::new(Some(path.clone())).unwrap();
        drop(again);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(PROCESS_MARKER).count(), 1, "{text}");
        assert!(!text.contains("web.shop"), "{text}");
    }
}
