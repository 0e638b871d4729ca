//! The `kumiko-operator run` process against kube-sim: leader election through a connection that
//! hangs, and the address the HTTP endpoints bound. Each replica is a real process, and what the
//! tests assert is read from its JSON log lines, as an operator's user would read them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use kumiko_crds::KumikoApp;
use kumiko_operator::cnpg::Cluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);

/// kube-sim with the CRDs the operator watches, and a kubeconfig for it.
struct Sim {
    server: kube_sim::ServerHandle,
    dir: tempfile::TempDir,
}

async fn start_sim() -> Sim {
    let server = kube_sim::Server::start(kube_sim::Config {
        preload_cnpg: false,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let client = server.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    crds.create(&PostParams::default(), &KumikoApp::crd())
        .await
        .unwrap();
    crds.create(&PostParams::default(), &Cluster::crd())
        .await
        .unwrap();
    Sim {
        server,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Sim {
    /// A kubeconfig pointing at `url` (kube-sim itself, or a proxy in front of it).
    fn kubeconfig(&self, name: &str, url: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            kube_sim::server::kubeconfig_yaml(url, self.server.credentials()),
        )
        .unwrap();
        path
    }
}

/// One `kumiko-operator run` process; its stdout (JSON logs) is collected line by line. Killed
/// when dropped.
struct Replica {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    fn start(kubeconfig: &Path, identity: &str, extra_args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kumiko-operator"))
            .args(["run", "--http-addr", "127.0.0.1:0"])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", "default")
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, logs }
    }

    /// The first log line whose message is `message`, once it is there (fails after [`WAIT`]).
    async fn wait_for_log(&self, message: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log(message) {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {message:?} in the log:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first log line whose message is `message`, if any yet.
    fn log(&self, message: &str) -> Option<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["fields"]["message"] == message)
    }

    /// The exit status, once the process has ended (fails after [`WAIT`]).
    async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn timestamp(line: &Value) -> Timestamp {
    line["timestamp"].as_str().unwrap().parse().unwrap()
}

/// A TCP proxy to `upstream` that, once `frozen` turns true, forwards nothing more and closes
/// nothing: every connection stays open and silent, as behind a network partition (half-open).
async fn proxy(upstream: SocketAddr, frozen: watch::Receiver<bool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                if *frozen.borrow() {
                    // Accepted, never answered.
                    let _held = client;
                    return std::future::pending().await;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    pump(client_read, server_write, frozen.clone()),
                    pump(server_read, client_write, frozen),
                );
            });
        }
    });
    addr
}

/// Copies `from` to `to` until either closes, or forever holds both once `frozen` turns true.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = frozen.wait_for(|frozen| *frozen) => Ok(usize::MAX),
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *frozen.borrow() {
            // Hold both halves open, forward nothing.
            return std::future::pending().await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Lease timings short enough for a test, with a wide margin (3 s) between the old leader's renew
/// deadline and the Lease's expiry, so that a loaded machine does not make the test flaky.
const LEASE_ARGS: [&str; 6] = [
    "--lease-duration",
    "6",
    "--lease-renew-deadline",
    "3",
    "--lease-retry-period",
    "0.5",
];

/// Defect 8 of issue 12. Replica A reaches the API through a proxy that stops forwarding without
/// closing (a half-open connection): its renewal hangs. A must stop leading at its renew deadline,
/// before its Lease expires; replica B, connected directly, takes the Lease only after it expired.
/// So A's "stopped leading" log line comes strictly before B's "leading" — one writer at a time.
/// (client-go's rule: `leaseDuration` > `renewDeadline`, renewals under a `RenewDeadline` timeout;
/// `tools/leaderelection/leaderelection.go`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewal_hangs_stops_before_a_follower_takes_over() {
    let sim = start_sim().await;
    let upstream = sim.server.addr();
    let (freeze, frozen) = watch::channel(false);
    let proxy_addr = proxy(upstream, frozen).await;
    let through_proxy = sim.kubeconfig("proxied", &format!("https://{proxy_addr}"));
    let direct = sim.kubeconfig("direct", sim.server.url());

    let mut a = Replica::start(&through_proxy, "operator-a", &LEASE_ARGS);
    a.wait_for_log("leading").await;
    // A few renewals go through before the partition.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        a.log("stopped leading").is_none(),
        "A renews while connected"
    );

    freeze.send(true).unwrap();
    let b = Replica::start(&direct, "operator-b", &LEASE_ARGS);
    let b_leading = b.wait_for_log("leading").await;
    let a_stopped = a
        .log("stopped leading")
        .expect("A logged that it stopped leading before B took over");
    assert!(
        timestamp(&a_stopped) < timestamp(&b_leading),
        "A stopped at {a_stopped}, B led at {b_leading}"
    );
    assert_eq!(
        a_stopped["fields"]["reason"],
        "no renewal succeeded within the renew deadline"
    );
    let status = a.wait_for_exit().await;
    assert!(
        !status.success(),
        "a replica that lost its Lease exits with an error"
    );
    drop(b);
    sim.server.shutdown().await;
}

/// Another write to the Lease between the leader's read and its write makes the renewal a 409
/// Conflict. That is retried within the renew deadline, as client-go does, not taken for a lost
/// Lease: the leader keeps leading (and its process keeps running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_refused_with_a_conflict_is_retried_not_a_lost_lease() {
    let sim = start_sim().await;
    let kubeconfig = sim.kubeconfig("direct", sim.server.url());
    let mut a = Replica::start(&kubeconfig, "operator-a", &LEASE_ARGS);
    a.wait_for_log("leading").await;
    let faults = sim.server.cluster().faults();
    faults.add(
        serde_json::from_value(serde_json::json!({
            "verb": "update", "resource": "leases.coordination.k8s.io", "error": 409, "times": 2
        }))
        .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !faults.list().is_empty() && a.log("stopped leading").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the leader renews");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the renew deadline (3 s) of the last renewal before the conflicts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        a.log("stopped leading").is_none(),
        "{:?}",
        a.log("stopped leading")
    );
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "the leader still runs"
    );
    drop(a);
    sim.server.shutdown().await;
}

/// Asked for port 0, the operator logs the port it bound, and serves there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_logs_the_http_address_it_bound() {
    let sim = start_sim().await;
    let kubeconfig = sim.kubeconfig("direct", sim.server.url());
    let replica = Replica::start(&kubeconfig, "operator-a", &["--no-leader-election"]);
    let serving = replica
        .wait_for_log("serving /metrics, /healthz, /readyz")
        .await;
    let addr: SocketAddr = serving["fields"]["addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0, "{serving}");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    drop(replica);
    sim.server.shutdown().await;
}
