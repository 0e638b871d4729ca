//! `pods/NAME/portforward?ports=P[,Q...]`: TCP to a pod's ports over one WebSocket.
//!
//! The protocol is kube-apiserver's `v4.channel.k8s.io` for port forwarding (the one kube-rs's
//! `Api::<Pod>::portforward` negotiates): every binary message starts with a channel byte; the
//! `i`-th requested port has the data channel `2i` and the error channel `2i + 1`; the server's
//! first message on each of them is the port number as a little-endian `u16`. Client messages on a
//! data channel are written to that port's connection; what the process sends back comes as
//! messages on the same channel. A port whose connection cannot be made gets its error as text on
//! its error channel. When every connection has ended (or failed), or the client closes, the
//! server closes the WebSocket.
//!
//! Refused like kube-apiserver and the kubelet refuse them: a request without a WebSocket upgrade
//! (`400 Upgrade request required`), without a supported subprotocol, without ports or with an
//! invalid one (400), for a pod that does not exist (404) or is not running (400).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{read_pod, status_response};
use crate::cluster::Cluster;
use crate::controllers::service_proxy::pod_target_port;
use crate::status::ApiError;

/// The WebSocket subprotocol served.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// Serves the request: answers `101 Switching Protocols` and bridges the ports in a task, or
/// answers the refusal.
pub fn serve(cluster: &Cluster, namespace: &str, pod: &str, mut request: Request) -> Response {
    let plan = match plan(cluster, namespace, pod, &request) {
        Ok(plan) => plan,
        Err(error) => return status_response(&error),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                bridge(socket, plan.ports).await;
            }
            Err(error) => tracing::debug!(%error, "portforward: upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(PROTOCOL),
    );
    if let Ok(accept) = HeaderValue::from_str(&plan.accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// A requested port: its number, and the loopback port of the process behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedPort {
    /// The port as requested (a container port).
    pub port: u16,
    /// Where the pod's process listens, if the pod publishes it.
    pub loopback: Option<u16>,
}

struct Plan {
    accept: String,
    ports: Vec<ForwardedPort>,
}

fn plan(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    request: &Request,
) -> Result<Plan, ApiError> {
    let headers = request.headers();
    let upgrade = header_has(headers, &header::UPGRADE, "websocket")
        && header_has(headers, &header::CONNECTION, "upgrade");
    if !upgrade {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    if !header_has(headers, &header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "unsupported portforward subprotocol: only {PROTOCOL} is served"
        )));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let ports = requested_ports(request.uri().query().unwrap_or(""))?;
    let pod = read_pod(cluster, namespace, name)?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: pod {name} is not running (phase {phase})"
        )));
    }
    Ok(Plan {
        accept: derive_accept_key(key.as_bytes()),
        ports: ports
            .into_iter()
            .map(|port| ForwardedPort {
                port,
                loopback: loopback_port(&pod, port),
            })
            .collect(),
    })
}

/// The loopback port behind a container port of a pod.
pub fn loopback_port(pod: &Pod, port: u16) -> Option<u16> {
    pod_target_port(pod, &IntOrString::Int(i32::from(port)))
}

/// Whether a comma-separated header lists `token` (case-insensitive).
pub(crate) fn header_has(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The `ports` query parameters (repeated, or comma-separated), each a port number 1-65535.
pub fn requested_ports(query: &str) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "ports" {
            continue;
        }
        for item in value.split(',').map(str::trim) {
            let port = item
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("invalid port {item:?}: must be 1-65535"))
                })?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "at least one port must be given with ?ports=",
        ));
    }
    Ok(ports)
}

/// What the per-port readers tell the WebSocket writer.
enum Event {
    Data(u8, Vec<u8>),
    Closed,
}

/// A message on `channel`.
fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Message::binary(bytes)
}

/// Runs the channels of one WebSocket until every port's connection ended or the client left.
async fn bridge<S>(socket: WebSocketStream<S>, ports: Vec<ForwardedPort>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let (events, mut received) = mpsc::channel::<Event>(64);
    let mut writers = Vec::with_capacity(ports.len());
    let mut open = 0_usize;
    for (index, forwarded) in ports.iter().enumerate() {
        let Ok(data) = u8::try_from(2 * index) else {
            break;
        };
        let error_channel = data + 1;
        let number = forwarded.port.to_le_bytes();
        if sink.send(frame(data, &number)).await.is_err()
            || sink.send(frame(error_channel, &number)).await.is_err()
        {
            return;
        }
        let connected = match forwarded.loopback {
            Some(loopback) => TcpStream::connect(("127.0.0.1", loopback))
                .await
                .map_err(|error| error.to_string()),
            None => Err("the pod publishes no process for it".to_owned()),
        };
        match connected {
            Ok(stream) => {
                let (mut reader, writer) = stream.into_split();
                writers.push(Some(writer));
                open += 1;
                let events = events.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 32 * 1024];
                    loop {
                        match reader.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => {
                                let chunk = buffer[..read].to_vec();
                                if events.send(Event::Data(data, chunk)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = events.send(Event::Closed).await;
                });
            }
            Err(error) => {
                writers.push(None);
                let message = format!(
                    "error forwarding port {} to pod: failed to connect to the pod's process: {error}",
                    forwarded.port
                );
                if sink
                    .send(frame(error_channel, message.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    drop(events);
    while open > 0 {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(bytes))) if bytes.len() > 1 => {
                    let channel = usize::from(bytes[0]);
                    if channel % 2 != 0 {
                        continue;
                    }
                    if let Some(Some(writer)) = writers.get_mut(channel / 2)
                        && writer.write_all(&bytes[1..]).await.is_err()
                    {
                        writers[channel / 2] = None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            event = received.recv() => match event {
                Some(Event::Data(channel, chunk)) => {
                    if sink.send(frame(channel, &chunk)).await.is_err() {
                        break;
                    }
                }
                Some(Event::Closed) => open -= 1,
                None => break,
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_comma_separated_or_repeated() {
        assert_eq!(
            requested_ports("&ports=80%2C1234").ok(),
            Some(vec![80, 1234])
        );
        assert_eq!(
            requested_ports("ports=5432&ports=8000").ok(),
            Some(vec![5432, 8000])
        );
        for bad in ["", "ports=", "ports=0", "ports=70000", "ports=http"] {
            assert!(requested_ports(bad).is_err(), "{bad}");
        }
    }
}
