//! A local TCP proxy per Service port, standing in for kube-proxy, and the Services' names.
//!
//! Every TCP port of a Service with a selector (not `ExternalName`, not headless) gets a listener
//! at the Service's ClusterIP (a loopback address, [`crate::cluster_ips`]) on the Service's own
//! port, as kube-proxy makes `<clusterIP>:<port>` reach the endpoints (kubernetes.io "Virtual IPs
//! and Service Proxies"); pods reach it by the Service's names, which the hosts files of
//! [`super::dns`] map to the ClusterIP. It also gets a listener on a loopback port of its own,
//! published on the Service as the annotation
//! `kube-sim.kumiko.so/proxy-port-PORT` (PORT: the Service port number); a `LoadBalancer`
//! Service also gets `status.loadBalancer.ingress[0].ip: 127.0.0.1`. Each connection goes to the
//! next endpoint, round robin, chosen when the connection arrives from the pods as they are then:
//! pods of the Service's namespace matching its selector, Running, Ready and not terminating
//! (unready ones too with `publishNotReadyAddresses`), as the EndpointSlice controller selects
//! them. The target port is the container port that `targetPort` names (by number or name) at
//! that container's loopback port (`kube-sim.kumiko.so/port-CONTAINER`); a numeric targetPort
//! that no container declares goes to the pod's first container. With no endpoint, the
//! connection is closed at once (kube-proxy rejects it). Open connections stay open when their
//! pod stops being an endpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dns::{HostsFiles, ServiceRecord};
use super::pods::{is_ready, is_terminating, phase};
use super::{
    CONTAINER_PORT_ANNOTATION_PREFIX, FIELD_MANAGER, POD_PORT_ANNOTATION,
    PROXY_PORT_ANNOTATION_PREFIX,
};

/// Where a Service port sends connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's selector.
    pub selector: BTreeMap<String, String>,
    /// The port's targetPort (defaults to the port).
    pub target_port: IntOrString,
    /// `publishNotReadyAddresses`.
    pub publish_not_ready: bool,
}

fn annotation_port(pod: &Pod, key: &str) -> Option<u16> {
    pod.annotations()
        .get(key)
        .and_then(|value| value.parse().ok())
}

/// The loopback port of `pod` that `target_port` refers to, if the pod serves it.
pub fn pod_target_port(pod: &Pod, target_port: &IntOrString) -> Option<u16> {
    let containers = pod.spec.as_ref().map(|spec| spec.containers.as_slice())?;
    let container_port = |container: &k8s_openapi::api::core::v1::Container| {
        annotation_port(
            pod,
            &format!("{CONTAINER_PORT_ANNOTATION_PREFIX}{}", container.name),
        )
    };
    match target_port {
        IntOrString::Int(number) => {
            let declared = containers.iter().find(|container| {
                container
                    .ports
                    .iter()
                    .flatten()
                    .any(|port| port.container_port == *number)
            });
            match declared {
                Some(container) => container_port(container),
                None => annotation_port(pod, POD_PORT_ANNOTATION),
            }
        }
        IntOrString::String(name) => containers
            .iter()
            .find(|container| {
                container
                    .ports
                    .iter()
                    .flatten()
                    .any(|port| port.name.as_deref() == Some(name.as_str()))
            })
            .and_then(container_port),
    }
}

/// The loopback ports of the pods that are endpoints of `target`, in a stable order.
pub fn endpoints<'a>(pods: impl IntoIterator<Item = &'a Pod>, target: &Target) -> Vec<u16> {
    let mut selected: Vec<(String, u16)> = pods
        .into_iter()
        .filter(|pod| pod.namespace().as_deref() == Some(target.namespace.as_str()))
        .filter(|pod| {
            let labels = pod.labels();
            target
                .selector
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .filter(|pod| !is_terminating(&pod.metadata) && phase(pod) == "Running")
        .filter(|pod| target.publish_not_ready || is_ready(pod))
        .filter_map(|pod| {
            pod_target_port(pod, &target.target_port).map(|port| (pod.name_any(), port))
        })
        .collect();
    selected.sort();
    selected.into_iter().map(|(_, port)| port).collect()
}

struct PortProxy {
    local_port: u16,
    target: Arc<RwLock<Target>>,
    task: JoinHandle<()>,
    /// The listener at `<clusterIP>:<port>`.
    cluster_ip_task: Option<JoinHandle<()>>,
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(task) = &self.cluster_ip_task {
            task.abort();
        }
    }
}

/// The Service's ClusterIP when it is a loopback address (kube-sim's own allocation, or one
/// given in the spec inside 127.0.0.0/8): the address its proxy listens on and its names
/// resolve to. Headless and `ExternalName` Services have none.
pub fn loopback_cluster_ip(service: &Service) -> Option<Ipv4Addr> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.cluster_ip
        .as_deref()?
        .parse::<Ipv4Addr>()
        .ok()
        .filter(|ip| ip.is_loopback() && *ip != Ipv4Addr::LOCALHOST)
}

/// The DNS record of a Service: its names at its ClusterIP.
pub fn service_record(service: &Service) -> Option<ServiceRecord> {
    Some(ServiceRecord {
        namespace: service.namespace()?,
        name: service.name_any(),
        ip: loopback_cluster_ip(service)?,
    })
}

async fn serve(
    listener: TcpListener,
    target: Arc<RwLock<Target>>,
    pods: Store<Pod>,
    next: Arc<AtomicUsize>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            // Out of descriptors, most likely: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let current = target.read().unwrap_or_else(|p| p.into_inner()).clone();
        let state = pods.state();
        let candidates = endpoints(state.iter().map(|pod| &**pod), &current);
        if candidates.is_empty() {
            drop(inbound);
            continue;
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            for offset in 0..candidates.len() {
                let port = candidates[(start + offset) % candidates.len()];
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

/// The TCP ports of a Service that get a proxy, with their targets.
fn proxied_ports(service: &Service) -> Vec<(i32, Target)> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let selector = spec.selector.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName")
        || spec.cluster_ip.as_deref() == Some("None")
        || selector.is_empty()
    {
        return Vec::new();
    }
    spec.ports
        .iter()
        .flatten()
        .filter(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|port| {
            (
                port.port,
                Target {
                    namespace: service.namespace().unwrap_or_default(),
                    selector: selector.clone(),
                    target_port: port
                        .target_port
                        .clone()
                        .unwrap_or(IntOrString::Int(port.port)),
                    publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
                },
            )
        })
        .collect()
}

struct Proxies {
    client: kube::Client,
    hosts: Arc<HostsFiles>,
    pods: Store<Pod>,
    services: HashMap<String, HashMap<i32, PortProxy>>,
}

impl Proxies {
    async fn apply(&mut self, service: &Service) {
        let Some(uid) = service.uid() else { return };
        if is_terminating(&service.metadata) {
            self.services.remove(&uid);
            self.set_record(&uid, None);
            return;
        }
        self.set_record(&uid, service_record(service));
        let cluster_ip = loopback_cluster_ip(service);
        let wanted = proxied_ports(service);
        let proxies = self.services.entry(uid).or_default();
        let wanted_ports: HashSet<i32> = wanted.iter().map(|(port, _)| *port).collect();
        proxies.retain(|port, _| wanted_ports.contains(port));
        for (port, target) in wanted {
            if let Some(existing) = proxies.get(&port) {
                *existing.target.write().unwrap_or_else(|p| p.into_inner()) = target;
                continue;
            }
            let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
                continue;
            };
            let Ok(local_port) = listener.local_addr().map(|address| address.port()) else {
                continue;
            };
            let target = Arc::new(RwLock::new(target));
            let next = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn(serve(
                listener,
                target.clone(),
                self.pods.clone(),
                next.clone(),
            ));
            let mut cluster_ip_task = None;
            if let (Some(ip), Ok(service_port)) = (cluster_ip, u16::try_from(port)) {
                match TcpListener::bind((ip, service_port)).await {
                    Ok(listener) => {
                        cluster_ip_task = Some(tokio::spawn(serve(
                            listener,
                            target.clone(),
                            self.pods.clone(),
                            next,
                        )));
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        service = %service.name_any(),
                        "service proxy: cannot listen on {ip}:{service_port}"
                    ),
                }
            }
            proxies.insert(
                port,
                PortProxy {
                    local_port,
                    target,
                    task,
                    cluster_ip_task,
                },
            );
        }
        self.publish(service).await;
    }

    fn set_record(&self, uid: &str, record: Option<ServiceRecord>) {
        if let Err(error) = self.hosts.set(uid, record) {
            tracing::warn!(error = %error, "service proxy: writing the hosts files failed");
        }
    }

    /// Writes the proxy ports onto the Service, if they differ from what it shows.
    async fn publish(&self, service: &Service) {
        let Some(uid) = service.uid() else { return };
        let proxies = self.services.get(&uid);
        let mut annotations = serde_json::Map::new();
        let current = service.annotations();
        for (key, value) in current {
            if let Some(suffix) = key.strip_prefix(PROXY_PORT_ANNOTATION_PREFIX) {
                let port: Option<i32> = suffix.parse().ok();
                if port.is_none_or(|port| !proxies.is_some_and(|p| p.contains_key(&port))) {
                    annotations.insert(key.clone(), Value::Null);
                } else if let Some(proxy) = port.and_then(|port| proxies.and_then(|p| p.get(&port)))
                    && value != &proxy.local_port.to_string()
                {
                    annotations.insert(key.clone(), json!(proxy.local_port.to_string()));
                }
            }
        }
        for (port, proxy) in proxies.into_iter().flatten() {
            let key = format!("{PROXY_PORT_ANNOTATION_PREFIX}{port}");
            if !current.contains_key(&key) {
                annotations.insert(key, json!(proxy.local_port.to_string()));
            }
        }
        let namespace = service.namespace().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        if !annotations.is_empty() {
            let patch = json!({"metadata": {"annotations": annotations}});
            if let Err(error) = api
                .patch(&service.name_any(), &params, &Patch::Merge(patch))
                .await
            {
                tracing::debug!(%error, service = %service.name_any(), "service proxy: annotating failed");
            }
        }
        let is_load_balancer =
            service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer");
        let has_ingress = service
            .status
            .as_ref()
            .and_then(|status| status.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|ingress| !ingress.is_empty());
        if is_load_balancer && !has_ingress && proxies.is_some_and(|p| !p.is_empty()) {
            let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}});
            if let Err(error) = api
                .patch_status(&service.name_any(), &params, &Patch::Merge(patch))
                .await
            {
                tracing::debug!(%error, service = %service.name_any(), "service proxy: load balancer status failed");
            }
        }
    }
}

/// Runs the proxies, and keeps the Services' names in `hosts`, until `shutdown`.
pub async fn run(client: kube::Client, hosts: Arc<HostsFiles>, shutdown: CancellationToken) {
    let (pods, writer) = reflector::store();
    let pod_stream = reflector::reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| async {});
    let pod_task = tokio::spawn(pod_stream);

    let mut proxies = Proxies {
        client: client.clone(),
        hosts,
        pods,
        services: HashMap::new(),
    };
    let services =
        watcher(Api::<Service>::all(client), watcher::Config::default()).default_backoff();
    let mut services = std::pin::pin!(services);
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = services.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(service))) => proxies.apply(&service).await,
            Some(Ok(watcher::Event::InitApply(service))) => {
                if let (Some(seen), Some(uid)) = (listed.as_mut(), service.uid()) {
                    seen.insert(uid);
                }
                proxies.apply(&service).await;
            }
            Some(Ok(watcher::Event::Delete(service))) => {
                if let Some(uid) = service.uid() {
                    proxies.services.remove(&uid);
                    proxies.set_record(&uid, None);
                }
            }
            Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(watcher::Event::InitDone)) => {
                if let Some(seen) = listed.take() {
                    proxies.services.retain(|uid, _| seen.contains(uid));
                    if let Err(error) = proxies.hosts.retain(&seen) {
                        tracing::warn!(error = %error, "service proxy: writing the hosts files failed");
                    }
                }
            }
            Some(Err(error)) => tracing::debug!(%error, "service proxy: watch error"),
            None => break,
        }
    }
    pod_task.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, terminating: bool, port: u16) -> Pod {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"},
                "annotations": {
                    "kube-sim.kumiko.so/port": port.to_string(),
                    "kube-sim.kumiko.so/port-app": port.to_string()}},
            "spec": {"containers": [{"name": "app", "image": "x",
                "ports": [{"name": "http", "containerPort": 3000}]}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("pod");
        if terminating {
            pod.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        pod
    }

    fn target(port: IntOrString) -> Target {
        Target {
            namespace: "shop".to_owned(),
            selector: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            target_port: port,
            publish_not_ready: false,
        }
    }

    #[test]
    fn endpoints_skip_unready_and_terminating_pods() {
        let pods = [
            pod("a", true, false, 4001),
            pod("b", false, false, 4002),
            pod("c", true, true, 4003),
            pod("d", true, false, 4004),
        ];
        assert_eq!(
            endpoints(pods.iter(), &target(IntOrString::String("http".to_owned()))),
            vec![4001, 4004]
        );
        let mut publish = target(IntOrString::Int(3000));
        publish.publish_not_ready = true;
        assert_eq!(endpoints(pods.iter(), &publish), vec![4001, 4002, 4004]);
    }

    #[test]
    fn unknown_named_target_port_selects_no_pod() {
        let pods = [pod("a", true, false, 4001)];
        assert!(endpoints(pods.iter(), &target(IntOrString::String("grpc".to_owned()))).is_empty());
        assert_eq!(
            endpoints(pods.iter(), &target(IntOrString::Int(8080))),
            vec![4001]
        );
    }

    #[test]
    fn headless_and_selectorless_services_get_no_proxy() {
        let headless: Service = serde_json::from_value(json!({"metadata": {"name": "h"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        .expect("service");
        assert!(proxied_ports(&headless).is_empty());
        let manual: Service = serde_json::from_value(json!({"metadata": {"name": "m"},
            "spec": {"ports": [{"port": 80}]}}))
        .expect("service");
        assert!(proxied_ports(&manual).is_empty());
        let normal: Service = serde_json::from_value(json!({"metadata": {"name": "n", "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}, {"port": 53, "protocol": "UDP"}]}}))
        .expect("service");
        let ports = proxied_ports(&normal);
        assert_eq!(ports.len(), 1);
        assert_eq!(
            ports[0].1.target_port,
            IntOrString::String("http".to_owned())
        );
    }
}
