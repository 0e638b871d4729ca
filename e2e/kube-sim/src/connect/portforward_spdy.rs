//! `pods/NAME/portforward` as kubectl 1.32 speaks it: the port-forward protocol over SPDY/3.1
//! ([`super::spdy`]), tunnelled through a WebSocket whose subprotocol is
//! `SPDY/3.1+portforward.k8s.io` (client-go `tools/portforward/tunneling_dialer.go`: every
//! binary message carries the next bytes of the SPDY connection, in both directions), or over
//! the connection itself after an `Upgrade: SPDY/3.1` (the fallback dialer's, and older
//! kubectls').
//!
//! The port-forward protocol (`portforward.k8s.io`, the kubelet's
//! `pkg/kubelet/cri/streaming/portforward/httpstream.go`, client-go `tools/portforward/
//! portforward.go`): for every local connection the client opens two streams whose headers name
//! the container `port`, a `requestid` shared by the pair, and the `streamtype`: `error` (which
//! the client half-closes at once) and `data`. The server answers each `SYN_STREAM` with a
//! `SYN_REPLY`; once both streams of a request are there it connects to the port and copies
//! bytes both ways on the data stream. The client's `FIN` on the data stream ends what the
//! process receives; when the process closes its side, the server sends `FIN` on the data stream
//! and on the error stream. A port that cannot be reached gets its error as text on the error
//! stream (which kubectl prints), then both `FIN`s. `PING`s are echoed; `GOAWAY` or the end of
//! the connection ends every forwarded connection.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::portforward::ForwardedPort;
use super::spdy::{FLAG_FIN, Frame, FrameReader, FrameWriter};

/// The WebSocket subprotocol of the tunnel.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol of port forwarding over SPDY (`X-Stream-Protocol-Version`).
pub const STREAM_PROTOCOL: &str = "portforward.k8s.io";

/// The largest data frame sent.
const CHUNK: usize = 32 * 1024;

/// One stream's role, from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRole {
    /// `error` or `data`.
    pub kind: StreamKind,
    /// The container port.
    pub port: u16,
    /// The request the stream belongs to.
    pub request_id: String,
}

/// The two stream types of a forwarded connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Errors, server to client.
    Error,
    /// The connection's bytes.
    Data,
}

/// The role a `SYN_STREAM`'s headers give its stream, or why they give none.
pub fn stream_role(headers: &[(String, String)]) -> Result<StreamRole, String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let kind = match header("streamtype") {
        Some("error") => StreamKind::Error,
        Some("data") => StreamKind::Data,
        other => return Err(format!("invalid stream type {other:?}")),
    };
    let port = header("port")
        .ok_or_else(|| "a port is required".to_owned())?
        .parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| "invalid port: must be 1-65535".to_owned())?;
    // Clients before the request id used the port as the pair's key.
    let request_id = header("requestid").map_or_else(|| format!("port-{port}"), str::to_owned);
    Ok(StreamRole {
        kind,
        port,
        request_id,
    })
}

/// What the pod-side tasks tell the session.
enum Event {
    Data(u32, Vec<u8>),
    /// The process closed the connection of this data stream.
    Closed(u32),
}

#[derive(Default)]
struct Request {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// Runs one SPDY port-forward connection: `input` brings the client's bytes, `output` takes
/// the server's; `loopback` maps a container port to the process's loopback port.
pub async fn serve(
    mut input: mpsc::Receiver<Vec<u8>>,
    output: mpsc::Sender<Vec<u8>>,
    loopback: impl Fn(u16) -> ForwardedPort,
) {
    let mut reader = FrameReader::default();
    let mut writer = FrameWriter::default();
    let (events_tx, mut events) = mpsc::channel::<Event>(64);
    let mut requests: HashMap<String, Request> = HashMap::new();
    // Data stream -> (its error stream, the connection's write half).
    let mut connections: HashMap<u32, (u32, Option<OwnedWriteHalf>)> = HashMap::new();
    let send = async |writer: &mut FrameWriter, frames: Vec<Frame>| -> bool {
        let mut bytes = Vec::new();
        for frame in &frames {
            match writer.encode(frame) {
                Ok(encoded) => bytes.extend(encoded),
                Err(error) => {
                    tracing::debug!(%error, "portforward: cannot encode a SPDY frame");
                    return false;
                }
            }
        }
        output.send(bytes).await.is_ok()
    };
    loop {
        tokio::select! {
            chunk = input.recv() => {
                let Some(chunk) = chunk else { break };
                reader.push(&chunk);
                loop {
                    let frame = match reader.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::debug!(%error, "portforward: SPDY connection broken");
                            return;
                        }
                    };
                    match frame {
                        Frame::SynStream { stream_id, headers, .. } => {
                            let reply = Frame::SynReply { stream_id, flags: 0, headers: Vec::new() };
                            if !send(&mut writer, vec![reply]).await {
                                return;
                            }
                            let role = match stream_role(&headers) {
                                Ok(role) => role,
                                Err(message) => {
                                    tracing::debug!(message, "portforward: stream refused");
                                    let reset = Frame::RstStream { stream_id, status: 1 };
                                    if !send(&mut writer, vec![reset]).await {
                                        return;
                                    }
                                    continue;
                                }
                            };
                            let request = requests.entry(role.request_id.clone()).or_default();
                            request.port = role.port;
                            match role.kind {
                                StreamKind::Error => request.error = Some(stream_id),
                                StreamKind::Data => request.data = Some(stream_id),
                            }
                            let (Some(error), Some(data)) = (request.error, request.data) else {
                                continue;
                            };
                            let port = request.port;
                            requests.remove(&role.request_id);
                            let forwarded = loopback(port);
                            let connected = match forwarded.loopback {
                                Some(target) => TcpStream::connect(("127.0.0.1", target))
                                    .await
                                    .map_err(|error| error.to_string()),
                                None => Err("the pod publishes no process for it".to_owned()),
                            };
                            match connected {
                                Ok(stream) => {
                                    let (mut from_pod, to_pod) = stream.into_split();
                                    connections.insert(data, (error, Some(to_pod)));
                                    let events = events_tx.clone();
                                    tokio::spawn(async move {
                                        let mut buffer = vec![0_u8; CHUNK];
                                        loop {
                                            match from_pod.read(&mut buffer).await {
                                                Ok(0) | Err(_) => break,
                                                Ok(read) => {
                                                    let chunk = buffer[..read].to_vec();
                                                    if events.send(Event::Data(data, chunk)).await.is_err() {
                                                        return;
                                                    }
                                                }
                                            }
                                        }
                                        let _ = events.send(Event::Closed(data)).await;
                                    });
                                }
                                Err(reason) => {
                                    let message = format!(
                                        "error forwarding port {port} to pod: failed to connect to the pod's process: {reason}"
                                    );
                                    let frames = vec![
                                        Frame::Data { stream_id: error, flags: 0, data: message.into_bytes() },
                                        Frame::Data { stream_id: error, flags: FLAG_FIN, data: Vec::new() },
                                        Frame::Data { stream_id: data, flags: FLAG_FIN, data: Vec::new() },
                                    ];
                                    if !send(&mut writer, frames).await {
                                        return;
                                    }
                                }
                            }
                        }
                        Frame::Data { stream_id, flags, data } => {
                            if let Some((_, to_pod)) = connections.get_mut(&stream_id) {
                                if let Some(writer_half) = to_pod
                                    && !data.is_empty()
                                    && writer_half.write_all(&data).await.is_err()
                                {
                                    *to_pod = None;
                                }
                                if flags & FLAG_FIN != 0
                                    && let Some(mut writer_half) = to_pod.take()
                                {
                                    let _ = writer_half.shutdown().await;
                                }
                            }
                        }
                        Frame::RstStream { stream_id, .. } => {
                            connections.remove(&stream_id);
                        }
                        Frame::Ping { id } => {
                            if !send(&mut writer, vec![Frame::Ping { id }]).await {
                                return;
                            }
                        }
                        Frame::GoAway { .. } => return,
                        Frame::SynReply { .. } | Frame::Ignored { .. } => {}
                    }
                }
            }
            event = events.recv() => match event {
                Some(Event::Data(stream_id, bytes)) => {
                    if connections.contains_key(&stream_id)
                        && !send(&mut writer, vec![Frame::Data { stream_id, flags: 0, data: bytes }]).await
                    {
                        return;
                    }
                }
                Some(Event::Closed(stream_id)) => {
                    if let Some((error, _)) = connections.remove(&stream_id) {
                        let frames = vec![
                            Frame::Data { stream_id, flags: FLAG_FIN, data: Vec::new() },
                            Frame::Data { stream_id: error, flags: FLAG_FIN, data: Vec::new() },
                        ];
                        if !send(&mut writer, frames).await {
                            return;
                        }
                    }
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn streams_are_paired_by_request_id_and_named_by_type_and_port() {
        assert_eq!(
            stream_role(&headers(&[
                ("streamtype", "data"),
                ("port", "5432"),
                ("requestid", "7")
            ])),
            Ok(StreamRole {
                kind: StreamKind::Data,
                port: 5432,
                request_id: "7".to_owned()
            })
        );
        assert_eq!(
            stream_role(&headers(&[("streamtype", "error"), ("port", "80")]))
                .map(|role| role.request_id),
            Ok("port-80".to_owned())
        );
        for bad in [
            headers(&[("streamtype", "resize"), ("port", "80")]),
            headers(&[("streamtype", "data")]),
            headers(&[("streamtype", "data"), ("port", "0")]),
            headers(&[("streamtype", "data"), ("port", "http")]),
        ] {
            assert!(stream_role(&bad).is_err(), "{bad:?}");
        }
    }

    /// A client's side of the protocol against a real TCP server: the request's bytes reach the
    /// process, its answer comes back on the data stream, and both streams end with FIN.
    #[tokio::test]
    async fn a_forwarded_connection_carries_bytes_both_ways_and_ends_with_fin() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("listener");
        let target = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accepted");
            let mut received = Vec::new();
            socket.read_to_end(&mut received).await.expect("read");
            socket.write_all(b"echo:").await.expect("written");
            socket.write_all(&received).await.expect("written");
        });
        let (to_server, input) = mpsc::channel(16);
        let (output, mut from_server) = mpsc::channel(16);
        tokio::spawn(serve(input, output, move |port| ForwardedPort {
            port,
            loopback: (port == 80).then_some(target),
        }));
        let mut client = FrameWriter::default();
        let mut bytes = Vec::new();
        for frame in [
            Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 3,
                flags: 0,
                headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Ping { id: 9 },
        ] {
            bytes.extend(client.encode(&frame).expect("encoded"));
        }
        to_server.send(bytes).await.expect("sent");
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        let mut data = Vec::new();
        while !frames.contains(&Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Vec::new(),
        }) {
            let chunk =
                tokio::time::timeout(std::time::Duration::from_secs(30), from_server.recv())
                    .await
                    .expect("the server answers")
                    .expect("open");
            reader.push(&chunk);
            while let Some(frame) = reader.next_frame().expect("parsed") {
                if let Frame::Data {
                    stream_id: 3,
                    data: bytes,
                    ..
                } = &frame
                {
                    data.extend_from_slice(bytes);
                }
                frames.push(frame);
            }
        }
        assert!(frames.contains(&Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Vec::new()
        }));
        assert!(frames.contains(&Frame::Ping { id: 9 }));
        assert_eq!(data, b"echo:hello");
        assert!(frames.contains(&Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Vec::new()
        }));
    }
}
