//! `pods/NAME/portforward`: TCP to a pod's ports, in the protocol the client asks for.
//!
//! - A WebSocket in `SPDY/3.1+portforward.k8s.io` (kubectl 1.32's default), or `Upgrade:
//!   SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io` (its fallback): the SPDY
//!   port-forward protocol, [`super::portforward_spdy`]; the ports are named per stream.
//! - A WebSocket in `v4.channel.k8s.io` for port forwarding (the one kube-rs's
//!   `Api::<Pod>::portforward` negotiates): every binary message starts with a channel byte; the
//!   `i`-th port of the `ports` query has the data channel `2i` and the error channel `2i + 1`;
//!   the server's first message on each of them is the port number as a little-endian `u16`.
//!   Client messages on a data channel are written to that port's connection; what the process
//!   sends back comes as messages on the same channel. A port whose connection cannot be made
//!   gets its error as text on its error channel. When every connection has ended (or failed),
//!   or the client closes, the server closes the WebSocket.
//!
//! Refused like kube-apiserver and the kubelet refuse them: a request without an upgrade
//! (`400 Upgrade request required`), without a supported subprotocol, without ports or with an
//! invalid one (400; the channel protocol), for a pod that does not exist (404) or is not
//! running (400).

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

use super::{portforward_spdy, read_pod, status_response};
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
    let transport = plan.transport;
    let spdy_pod = plan.pod.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(error) => {
                tracing::debug!(%error, "portforward: upgrade failed");
                return;
            }
        };
        let spdy_ports = move |port: u16| ForwardedPort {
            port,
            loopback: loopback_port(&spdy_pod, port),
        };
        match transport {
            Transport::Channels => {
                let socket = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                bridge(socket, plan.ports).await;
            }
            Transport::SpdyOverWebSocket => {
                let socket = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                spdy_over_websocket(socket, spdy_ports).await;
            }
            Transport::Spdy => spdy_over_connection(upgraded, spdy_ports).await,
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match transport {
        Transport::Channels | Transport::SpdyOverWebSocket => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let protocol = match transport {
                Transport::Channels => PROTOCOL,
                Transport::SpdyOverWebSocket | Transport::Spdy => portforward_spdy::TUNNEL_PROTOCOL,
            };
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
            if let Ok(accept) = HeaderValue::from_str(&plan.accept) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
        }
        Transport::Spdy => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            headers.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(portforward_spdy::STREAM_PROTOCOL),
            );
        }
    }
    response
}

/// The SPDY connection's bytes in the binary messages of a WebSocket (client-go's
/// `TunnelingConnection`).
async fn spdy_over_websocket<S>(socket: WebSocketStream<S>, ports: impl Fn(u16) -> ForwardedPort)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let (to_session, input) = mpsc::channel::<Vec<u8>>(64);
    let (output, mut from_session) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = from_session.recv().await {
            if sink.send(Message::binary(bytes)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    });
    let reader = async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Binary(bytes) => {
                    if to_session.send(bytes.to_vec()).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) => return,
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    };
    tokio::select! {
        () = portforward_spdy::serve(input, output, ports) => {}
        () = reader => {}
    }
    let _ = writer.await;
}

/// The SPDY connection on the upgraded connection itself (`Upgrade: SPDY/3.1`).
async fn spdy_over_connection<S>(socket: S, ports: impl Fn(u16) -> ForwardedPort)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut read_half, mut write_half) = tokio::io::split(socket);
    let (to_session, input) = mpsc::channel::<Vec<u8>>(64);
    let (output, mut from_session) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = from_session.recv().await {
            if write_half.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    });
    let reader = async move {
        let mut buffer = vec![0_u8; 32 * 1024];
        loop {
            match read_half.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    if to_session.send(buffer[..read].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = portforward_spdy::serve(input, output, ports) => {}
        () = reader => {}
    }
    let _ = writer.await;
}

/// A requested port: its number, and the loopback port of the process behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedPort {
    /// The port as requested (a container port).
    pub port: u16,
    /// Where the pod's process listens, if the pod publishes it.
    pub loopback: Option<u16>,
}

/// How the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// A WebSocket in `v4.channel.k8s.io` (kube-rs).
    Channels,
    /// SPDY tunnelled through a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl 1.32).
    SpdyOverWebSocket,
    /// SPDY on the upgraded connection (`Upgrade: SPDY/3.1`).
    Spdy,
}

struct Plan {
    accept: String,
    transport: Transport,
    ports: Vec<ForwardedPort>,
    pod: Pod,
}

fn plan(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    request: &Request,
) -> Result<Plan, ApiError> {
    let headers = request.headers();
    let websocket = header_has(headers, &header::UPGRADE, "websocket")
        && header_has(headers, &header::CONNECTION, "upgrade");
    let spdy = header_has(headers, &header::UPGRADE, "SPDY/3.1")
        && header_has(headers, &header::CONNECTION, "upgrade");
    let transport = if websocket {
        if header_has(
            headers,
            &header::SEC_WEBSOCKET_PROTOCOL,
            portforward_spdy::TUNNEL_PROTOCOL,
        ) {
            Transport::SpdyOverWebSocket
        } else if header_has(headers, &header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL) {
            Transport::Channels
        } else {
            return Err(ApiError::bad_request(format!(
                "unsupported portforward subprotocol: {PROTOCOL} and {} are served",
                portforward_spdy::TUNNEL_PROTOCOL
            )));
        }
    } else if spdy {
        if !header_has(
            headers,
            &header::HeaderName::from_static("x-stream-protocol-version"),
            portforward_spdy::STREAM_PROTOCOL,
        ) {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade: no supported stream protocol ({} is served)",
                portforward_spdy::STREAM_PROTOCOL
            )));
        }
        Transport::Spdy
    } else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let accept = match transport {
        Transport::Channels | Transport::SpdyOverWebSocket => derive_accept_key(
            headers
                .get(header::SEC_WEBSOCKET_KEY)
                .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?
                .as_bytes(),
        ),
        Transport::Spdy => String::new(),
    };
    // The channel protocol names its ports in the query; SPDY names each stream's port.
    let ports = match transport {
        Transport::Channels => requested_ports(request.uri().query().unwrap_or(""))?,
        Transport::SpdyOverWebSocket | Transport::Spdy => Vec::new(),
    };
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
        accept,
        transport,
        ports: ports
            .into_iter()
            .map(|port| ForwardedPort {
                port,
                loopback: loopback_port(&pod, port),
            })
            .collect(),
        pod,
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
