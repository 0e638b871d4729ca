//! TCP from the test process to a Service port, through the API server: a loopback listener whose
//! every connection is bridged over the `portforward` subresource of a ready pod behind the
//! Service (what `kubectl port-forward svc/NAME` does). The same code reaches CNPG's Postgres on
//! kind and the CNPG simulation's on kube-sim.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::app::pod_is_ready;

/// A listener on `127.0.0.1:<local_port>` forwarding to a Service port. Dropping it stops
/// accepting (connections already made run until either side closes them).
pub struct ServiceTunnel {
    local_port: u16,
    accept: JoinHandle<()>,
}

impl ServiceTunnel {
    /// Opens a tunnel to port `port` of Service `namespace/service`. The Service is read (and a
    /// ready pod chosen) for every connection, so a tunnel outlives pod replacements.
    pub async fn open(client: &Client, namespace: &str, service: &str, port: u16) -> Result<Self> {
        // Fail now, with the reason, when the Service cannot be reached at all.
        backend(client, namespace, service, port).await?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port for the tunnel")?;
        let local_port = listener.local_addr().context("the tunnel's port")?.port();
        let client = client.clone();
        let (namespace, service) = (namespace.to_owned(), service.to_owned());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let (client, namespace, service) =
                    (client.clone(), namespace.clone(), service.clone());
                tokio::spawn(async move {
                    if let Err(error) = bridge(inbound, &client, &namespace, &service, port).await {
                        eprintln!("tunnel to {namespace}/{service}:{port}: {error:#}");
                    }
                });
            }
        });
        Ok(ServiceTunnel { local_port, accept })
    }

    /// The loopback port to connect to.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }
}

impl Drop for ServiceTunnel {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Carries one connection to a ready pod behind the Service, until either side closes.
async fn bridge(
    mut inbound: TcpStream,
    client: &Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Result<()> {
    let (pod, container_port) = backend(client, namespace, service, port).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = pods
        .portforward(&pod, &[container_port])
        .await
        .with_context(|| format!("portforward to pod {namespace}/{pod}:{container_port}"))?;
    let mut upstream = forwarder
        .take_stream(container_port)
        .context("the portforward has no stream for the port")?;
    let copied = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
    drop(upstream);
    // The server ends the WebSocket when the pod's side closes, after which kube-rs's own
    // closing fails: the connection's outcome is what `copied` says.
    let _ = forwarder.join().await;
    if let Err(error) = copied
        && !matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    {
        return Err(error).context("copying between the test and the pod");
    }
    Ok(())
}

/// A ready pod behind Service port `port`, and the container port the Service targets on it.
pub async fn backend(
    client: &Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Result<(String, u16)> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let found = services
        .get(service)
        .await
        .with_context(|| format!("reading Service {namespace}/{service}"))?;
    let spec = found.spec.unwrap_or_default();
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port))
        .with_context(|| format!("Service {namespace}/{service} has no port {port}"))?;
    let target = service_port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(service_port.port));
    let selector = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        bail!("Service {namespace}/{service} has no selector: no pod to forward to");
    }
    let labels = selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut ready: Vec<Pod> = pods
        .list(&ListParams::default().labels(&labels))
        .await
        .with_context(|| format!("listing the pods of Service {namespace}/{service}"))?
        .items
        .into_iter()
        .filter(pod_is_ready)
        .collect();
    ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in ready {
        if let Some(container_port) = container_port(&pod, &target) {
            return Ok((pod.metadata.name.unwrap_or_default(), container_port));
        }
    }
    bail!("Service {namespace}/{service} has no ready pod serving port {port}")
}

/// The container port `target` (a Service's targetPort) names on `pod`.
fn container_port(pod: &Pod, target: &IntOrString) -> Option<u16> {
    match target {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|container| container.ports.iter().flatten())
            .find(|port| port.name.as_deref() == Some(name.as_str()))
            .and_then(|port| u16::try_from(port.container_port).ok()),
    }
}
