//! A simulated ingress controller: one loopback port that routes HTTP requests by their `Host`
//! header and path to the ready endpoints of the Service an Ingress names.
//!
//! It acts as the cluster's default IngressClass, `kube-sim`: it serves every `networking.k8s.io/v1`
//! Ingress whose `spec.ingressClassName` is unset or `kube-sim` (an Ingress of another class is
//! left to a controller that does not run here, as on a real cluster), and publishes its address
//! on each such Ingress as a real controller does, in `status.loadBalancer.ingress`:
//! `[{ip: 127.0.0.1, ports: [{port: PORT, protocol: TCP}]}]` (PORT: its loopback port).
//!
//! Routing follows the Ingress documentation (kubernetes.io, "Ingress": *Path types*, *Multiple
//! matches*, *Hostname wildcards*):
//! - a rule with a host matches that host exactly; `*.example.com` matches one label in place of
//!   the `*` (`a.example.com`, not `example.com` nor `a.b.example.com`); a rule without a host
//!   matches every host; the `Host` header's port is ignored;
//! - `Exact` matches the path exactly (case-sensitive); `Prefix` (and `ImplementationSpecific`,
//!   taken as `Prefix`) matches element-wise on `/`-separated segments (`/foo` matches `/foo`,
//!   `/foo/` and `/foo/bar`, not `/foobar`);
//! - of several matches, an exact host beats a wildcard, which beats no host; then the longest
//!   path wins, `Exact` before `Prefix` at equal length; then the oldest Ingress (by name, here).
//!
//! The matched backend Service's port (by name or number) leads to its target port on the pods
//! that are its endpoints as [`super::service_proxy::endpoints`] selects them: Running, Ready, not
//! terminating. No matching rule answers 404; no ready endpoint answers 503 (as ingress-nginx
//! does). TLS is not terminated (the port speaks plain HTTP); `spec.tls` is ignored.
//!
//! Differences from a real controller: the route is chosen once per connection, from the first
//! request's head (a client that sends requests for several hosts on one keep-alive connection
//! gets them all routed to the first host's backend); `defaultBackend` and `resource` backends are
//! not served.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::FIELD_MANAGER;
use super::service_proxy::{Target, endpoints};

/// The IngressClass the simulated controller serves (and the default one).
pub const INGRESS_CLASS: &str = "kube-sim";

/// The longest request head read before routing.
const MAX_HEAD: usize = 16 * 1024;

/// The Service backend a request is routed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The Ingress's (and the Service's) namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Service port, by name or number.
    pub port: IntOrString,
}

/// Whether the simulated controller serves `ingress` (its class is unset or [`INGRESS_CLASS`]).
pub fn serves(ingress: &Ingress) -> bool {
    ingress
        .spec
        .as_ref()
        .and_then(|spec| spec.ingress_class_name.as_deref())
        .is_none_or(|class| class == INGRESS_CLASS)
}

/// How well a rule's host matches: exact 2, wildcard 1, no host 0; `None` when it does not.
fn host_rank(rule_host: Option<&str>, host: &str) -> Option<u8> {
    match rule_host {
        None | Some("") => Some(0),
        Some(pattern) => match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .filter(|(label, rest)| !label.is_empty() && *rest == suffix)
                .map(|_| 1),
            None => (pattern == host).then_some(2),
        },
    }
}

/// Whether `path_type` `prefix_or_exact` matches the request path `path`.
pub(crate) fn path_matches(path_type: &str, rule_path: &str, path: &str) -> bool {
    if path_type == "Exact" {
        return rule_path == path;
    }
    let prefix = rule_path.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The backend `host` and `path` route to among `ingresses` (those the controller serves).
pub fn route<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    host: &str,
    path: &str,
) -> Option<Backend> {
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
        .to_ascii_lowercase();
    let mut best: Option<((u8, usize, bool), String, Backend)> = None;
    for ingress in ingresses.into_iter().filter(|ingress| serves(ingress)) {
        let namespace = ingress.namespace().unwrap_or_default();
        let name = ingress.name_any();
        for rule in ingress
            .spec
            .iter()
            .flat_map(|spec| spec.rules.iter().flatten())
        {
            let Some(host_rank) = host_rank(rule.host.as_deref(), &host) else {
                continue;
            };
            for rule_path in rule.http.iter().flat_map(|http| &http.paths) {
                let value = rule_path.path.as_deref().unwrap_or("/");
                if !path_matches(&rule_path.path_type, value, path) {
                    continue;
                }
                let Some(service) = &rule_path.backend.service else {
                    continue;
                };
                let Some(port) = service.port.as_ref().and_then(|port| {
                    port.name
                        .clone()
                        .map(IntOrString::String)
                        .or(port.number.map(IntOrString::Int))
                }) else {
                    continue;
                };
                let rank = (host_rank, value.len(), rule_path.path_type == "Exact");
                let better = match &best {
                    None => true,
                    Some((best_rank, best_name, _)) => {
                        rank > *best_rank || (rank == *best_rank && name < *best_name)
                    }
                };
                if better {
                    best = Some((
                        rank,
                        name.clone(),
                        Backend {
                            namespace: namespace.clone(),
                            service: service.name.clone(),
                            port,
                        },
                    ));
                }
            }
        }
    }
    best.map(|(_, _, backend)| backend)
}

/// Where the Service port of `backend` sends traffic, if the Service has that port and a selector.
pub fn target(service: &Service, backend: &Backend) -> Option<Target> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.clone().filter(|s| !s.is_empty())?;
    let port = spec
        .ports
        .iter()
        .flatten()
        .find(|port| match &backend.port {
            IntOrString::String(name) => port.name.as_deref() == Some(name.as_str()),
            IntOrString::Int(number) => port.port == *number,
        })?;
    Some(Target {
        namespace: backend.namespace.clone(),
        selector,
        target_port: port
            .target_port
            .clone()
            .unwrap_or(IntOrString::Int(port.port)),
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    })
}

/// The `Host` header and the path of a request head, if it is one.
pub fn parse_head(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?;
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    let host = lines.take_while(|line| !line.is_empty()).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim().to_owned())
    })?;
    Some((host, path))
}

struct Stores {
    ingresses: Store<Ingress>,
    services: Store<Service>,
    pods: Store<Pod>,
    next: AtomicUsize,
}

pub(crate) async fn respond(mut stream: TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn handle(mut inbound: TcpStream, stores: Arc<Stores>) {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match inbound.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > MAX_HEAD {
            return respond(inbound, "431 Request Header Fields Too Large", "").await;
        }
    }
    let Some((host, path)) = parse_head(&head) else {
        return respond(inbound, "400 Bad Request", "no Host header\n").await;
    };
    let ingresses = stores.ingresses.state();
    let Some(backend) = route(ingresses.iter().map(|i| &**i), &host, &path) else {
        return respond(inbound, "404 Not Found", "no Ingress rule matches\n").await;
    };
    let service = stores.services.state().into_iter().find(|s| {
        s.name_any() == backend.service
            && s.namespace().as_deref() == Some(backend.namespace.as_str())
    });
    let Some(target) = service.as_deref().and_then(|s| target(s, &backend)) else {
        return respond(inbound, "503 Service Unavailable", "no such Service port\n").await;
    };
    let pods = stores.pods.state();
    let candidates = endpoints(pods.iter().map(|pod| &**pod), &target);
    let start = stores.next.fetch_add(1, Ordering::Relaxed);
    for offset in 0..candidates.len() {
        let port = candidates[(start + offset) % candidates.len()];
        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
            if outbound.write_all(&head).await.is_err() {
                continue;
            }
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
    respond(inbound, "503 Service Unavailable", "no ready endpoint\n").await;
}

/// The status the controller publishes on an Ingress it serves from `port`.
pub fn load_balancer_status(port: u16) -> Value {
    json!({"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ports": [{"port": port, "protocol": "TCP"}]}]}})
}

async fn publish(client: &kube::Client, ingress: &Ingress, port: u16) {
    let wanted = load_balancer_status(port);
    let current = ingress
        .status
        .as_ref()
        .and_then(|status| serde_json::to_value(status).ok());
    if current.as_ref() == Some(&wanted) {
        return;
    }
    let api: Api<Ingress> =
        Api::namespaced(client.clone(), &ingress.namespace().unwrap_or_default());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = json!({"status": wanted});
    if let Err(error) = api
        .patch_status(&ingress.name_any(), &params, &Patch::Merge(patch))
        .await
    {
        tracing::debug!(%error, ingress = %ingress.name_any(), "ingress: publishing the status failed");
    }
}

fn store<K>(client: &kube::Client, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| async {});
    tasks.push(tokio::spawn(stream));
    reader
}

/// Runs the simulated ingress on a loopback port until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "ingress: cannot listen");
            return;
        }
    };
    let Ok(port) = listener.local_addr().map(|address| address.port()) else {
        return;
    };
    let mut tasks = Vec::new();
    let stores = Arc::new(Stores {
        ingresses: store::<Ingress>(&client, &mut tasks),
        services: store::<Service>(&client, &mut tasks),
        pods: store::<Pod>(&client, &mut tasks),
        next: AtomicUsize::new(0),
    });
    let accepting = stores.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(handle(inbound, accepting.clone()));
        }
    }));
    let ingresses = watcher(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let mut ingresses = std::pin::pin!(ingresses);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = ingresses.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(ingress) | watcher::Event::InitApply(ingress))) => {
                if serves(&ingress) {
                    publish(&client, &ingress, port).await;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => tracing::debug!(%error, "ingress: watch error"),
            None => break,
        }
    }
    for task in tasks {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(name: &str, class: Option<&str>, rules: Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"ingressClassName": class, "rules": rules}
        }))
        .unwrap()
    }

    fn rule(host: Option<&str>, path: &str, path_type: &str, service: &str) -> Value {
        json!({"host": host, "http": {"paths": [{
            "path": path, "pathType": path_type,
            "backend": {"service": {"name": service, "port": {"name": "http"}}}
        }]}})
    }

    fn service_of(backend: Option<Backend>) -> Option<String> {
        backend.map(|backend| backend.service)
    }

    #[test]
    fn the_host_header_picks_the_rule_and_its_port_is_ignored() {
        let ingresses = [ingress(
            "web",
            None,
            json!([
                rule(Some("a.example.com"), "/", "Prefix", "a"),
                rule(Some("b.example.com"), "/", "Prefix", "b")
            ]),
        )];
        assert_eq!(
            service_of(route(&ingresses, "b.example.com:8080", "/x")),
            Some("b".into())
        );
        assert_eq!(
            service_of(route(&ingresses, "A.example.com", "/")),
            Some("a".into())
        );
        assert_eq!(route(&ingresses, "c.example.com", "/"), None);
    }

    #[test]
    fn prefix_matches_whole_segments_and_the_longest_path_wins() {
        let ingresses = [ingress(
            "web",
            None,
            json!([{"host": "s.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "root", "port": {"number": 80}}}},
                {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                {"path": "/api/v1", "pathType": "Exact", "backend": {"service": {"name": "exact", "port": {"number": 80}}}}
            ]}}]),
        )];
        let to = |path: &str| service_of(route(&ingresses, "s.example.com", path));
        assert_eq!(to("/api"), Some("api".into()));
        assert_eq!(to("/api/users"), Some("api".into()));
        assert_eq!(
            to("/apis"),
            Some("root".into()),
            "/api is not a prefix of /apis"
        );
        assert_eq!(to("/api/v1"), Some("exact".into()));
        assert_eq!(to("/api/v1/x"), Some("api".into()));
    }

    #[test]
    fn an_exact_host_beats_a_wildcard_which_matches_one_label() {
        let ingresses = [
            ingress(
                "wild",
                None,
                json!([rule(Some("*.example.com"), "/", "Prefix", "wild")]),
            ),
            ingress(
                "exact",
                None,
                json!([rule(Some("a.example.com"), "/", "Prefix", "exact")]),
            ),
            ingress("any", None, json!([rule(None, "/", "Prefix", "any")])),
        ];
        let to = |host: &str| service_of(route(&ingresses, host, "/"));
        assert_eq!(to("a.example.com"), Some("exact".into()));
        assert_eq!(to("b.example.com"), Some("wild".into()));
        assert_eq!(to("x.b.example.com"), Some("any".into()));
        assert_eq!(to("example.com"), Some("any".into()));
    }

    #[test]
    fn another_ingress_class_is_not_served() {
        let ingresses = [ingress(
            "nginx",
            Some("nginx"),
            json!([rule(None, "/", "Prefix", "web")]),
        )];
        assert_eq!(route(&ingresses, "x", "/"), None);
        let ours = [ingress(
            "sim",
            Some(INGRESS_CLASS),
            json!([rule(None, "/", "Prefix", "web")]),
        )];
        assert_eq!(service_of(route(&ours, "x", "/")), Some("web".into()));
    }

    #[test]
    fn the_head_gives_host_and_path_without_the_query() {
        let head = b"GET /status?x=1 HTTP/1.1\r\nUser-Agent: t\r\nhost: shop.example.com\r\n\r\n";
        assert_eq!(
            parse_head(head),
            Some(("shop.example.com".into(), "/status".into()))
        );
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn the_service_port_by_name_gives_its_target_port() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "shop-api", "namespace": "shop"},
            "spec": {"selector": {"app": "shop"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"}
            ]}
        }))
        .unwrap();
        let backend = Backend {
            namespace: "shop".into(),
            service: "shop-api".into(),
            port: IntOrString::String("http".into()),
        };
        let target = target(&service, &backend).unwrap();
        assert_eq!(target.target_port, IntOrString::String("http".into()));
        let by_number = Backend {
            port: IntOrString::Int(81),
            ..backend
        };
        assert_eq!(super::target(&service, &by_number), None);
    }
}
