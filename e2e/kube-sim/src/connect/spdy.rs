//! The SPDY/3.1 framing `kubectl port-forward` speaks (no maintained Rust crate implements
//! SPDY; this is the minimal part the port-forward protocol needs, server side).
//!
//! The rules, from the SPDY Protocol draft 3.1 (section 2.2 "Framing", 2.6 "Control frames"):
//!
//! - every frame has an 8-byte header. A control frame starts with the bit 1, a 15-bit version
//!   (3) and a 16-bit type, then 8 bits of flags and a 24-bit length of what follows; a data
//!   frame starts with the bit 0 and a 31-bit stream id, then 8 bits of flags (`FLAG_FIN` = 1:
//!   the sender's last frame on the stream) and the 24-bit length. Numbers are big-endian;
//! - `SYN_STREAM` (1): stream id, associated stream id, 3 bits of priority and 13 unused, then
//!   a header block; `SYN_REPLY` (2): stream id, header block; `RST_STREAM` (3): stream id and
//!   status; `SETTINGS` (4); `PING` (6): a 32-bit id the receiver sends back unchanged;
//!   `GOAWAY` (7): last good stream id and status; `HEADERS` (8): stream id and header block;
//!   `WINDOW_UPDATE` (9): stream id and delta;
//! - a header block is a 32-bit count of pairs, then each name and value as a 32-bit length and
//!   the bytes (names lower case; several values joined by NUL). It is compressed with zlib, one
//!   compression context per direction for the whole connection, whose preset dictionary is the
//!   spec's ([`DICTIONARY`], section 2.6.10.1); every block ends with a sync flush.
//!
//! Flow control (`WINDOW_UPDATE`, the SETTINGS initial window) is read and ignored: kubectl's
//! SPDY library (moby/spdystream) neither waits for windows nor expects updates.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY version served.
pub const VERSION: u16 = 3;
/// The data frame flag: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 1;

/// A frame, as read or to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `SYN_STREAM`: the client opens a stream.
    SynStream {
        /// The stream.
        stream_id: u32,
        /// Flags (`FLAG_FIN`: no data follows).
        flags: u8,
        /// Its headers, names lower case.
        headers: Vec<(String, String)>,
    },
    /// `SYN_REPLY`: the answer to a `SYN_STREAM`.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// Flags.
        flags: u8,
        /// Headers.
        headers: Vec<(String, String)>,
    },
    /// `RST_STREAM`: the stream is gone.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: u32,
    },
    /// `PING`, echoed unchanged.
    Ping {
        /// Its id.
        id: u32,
    },
    /// `GOAWAY`: the sender opens no more streams.
    GoAway {
        /// The last stream it handled.
        last_good_stream_id: u32,
        /// Why.
        status: u32,
    },
    /// A data frame.
    Data {
        /// The stream.
        stream_id: u32,
        /// Flags (`FLAG_FIN`).
        flags: u8,
        /// The payload.
        data: Vec<u8>,
    },
    /// A frame the port-forward server does not act on (`SETTINGS`, `HEADERS`,
    /// `WINDOW_UPDATE`, `NOOP`, or a type it does not know), by its control type.
    Ignored {
        /// The control frame type.
        kind: u16,
    },
}

/// What breaks a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame shorter than its type requires, or a header block that does not parse.
    #[error("malformed SPDY {0}")]
    Malformed(&'static str),
    /// The header block does not inflate.
    #[error("SPDY header block: {0}")]
    Inflate(#[source] flate2::DecompressError),
    /// The header block does not deflate.
    #[error("SPDY header block: {0}")]
    Deflate(#[source] flate2::CompressError),
}

/// The SPDY/3 header compression dictionary (SPDY draft 3.1, section 2.6.10.1): length-prefixed
/// header names and values, then a block of common text, 1423 bytes.
pub fn dictionary() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let mut bytes = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            let length = u32::try_from(word.len()).unwrap_or_default();
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(word.as_bytes());
        }
        bytes.extend_from_slice(DICTIONARY_TEXT.as_bytes());
        bytes
    })
}

/// The length-prefixed part of [`dictionary`], in the spec's order.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The text part of [`dictionary`].
const DICTIONARY_TEXT: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

fn be32(bytes: &[u8], at: usize) -> Result<u32, SpdyError> {
    bytes
        .get(at..at + 4)
        .and_then(|slice| <[u8; 4]>::try_from(slice).ok())
        .map(u32::from_be_bytes)
        .ok_or(SpdyError::Malformed("frame: too short"))
}

/// Reads frames from the bytes of a connection as they arrive, inflating header blocks.
pub struct FrameReader {
    buffer: Vec<u8>,
    inflate: Decompress,
    dictionary_set: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            buffer: Vec::new(),
            inflate: Decompress::new(true),
            dictionary_set: false,
        }
    }
}

impl FrameReader {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let length = usize::from(self.buffer[5]) << 16
            | usize::from(self.buffer[6]) << 8
            | usize::from(self.buffer[7]);
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buffer.drain(..8 + length).collect();
        let flags = frame[4];
        let payload = &frame[8..];
        if frame[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: be32(&frame, 0)? & 0x7fff_ffff,
                flags,
                data: payload.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([frame[0] & 0x7f, frame[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([frame[2], frame[3]]);
        Ok(Some(match kind {
            SYN_STREAM => {
                let stream_id = be32(payload, 0)? & 0x7fff_ffff;
                let block = payload
                    .get(10..)
                    .ok_or(SpdyError::Malformed("SYN_STREAM: too short"))?;
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers: self.headers(block)?,
                }
            }
            SYN_REPLY => {
                let stream_id = be32(payload, 0)? & 0x7fff_ffff;
                let block = payload
                    .get(4..)
                    .ok_or(SpdyError::Malformed("SYN_REPLY: too short"))?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers: self.headers(block)?,
                }
            }
            RST_STREAM => Frame::RstStream {
                stream_id: be32(payload, 0)? & 0x7fff_ffff,
                status: be32(payload, 4)?,
            },
            PING => Frame::Ping {
                id: be32(payload, 0)?,
            },
            GOAWAY => Frame::GoAway {
                last_good_stream_id: be32(payload, 0)? & 0x7fff_ffff,
                status: be32(payload, 4).unwrap_or(0),
            },
            other => {
                // HEADERS carry a header block: it must go through the shared inflate context.
                if other == 8
                    && let Some(block) = payload.get(4..)
                {
                    self.headers(block)?;
                }
                Frame::Ignored { kind: other }
            }
        }))
    }

    /// Inflates one header block (continuing the connection's zlib stream) and parses it.
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            out.reserve(1024);
            let before_in = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
            match result {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(error) if error.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(SpdyError::Inflate)?;
                    self.dictionary_set = true;
                    continue;
                }
                Err(error) => return Err(SpdyError::Inflate(error)),
            }
            if consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
        }
        parse_header_block(&out)
    }
}

/// Parses an inflated header block.
pub fn parse_header_block(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let count = be32(block, 0)?;
    let mut at = 4;
    let mut headers = Vec::new();
    let text = |at: &mut usize| -> Result<String, SpdyError> {
        let length = usize::try_from(be32(block, *at)?)
            .map_err(|_| SpdyError::Malformed("header block: length"))?;
        let bytes = block
            .get(*at + 4..*at + 4 + length)
            .ok_or(SpdyError::Malformed("header block: too short"))?;
        *at += 4 + length;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    };
    for _ in 0..count {
        let name = text(&mut at)?;
        let value = text(&mut at)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Writes frames, deflating header blocks.
pub struct FrameWriter {
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Setting the dictionary on a fresh stream cannot fail.
        let _ = deflate.set_dictionary(dictionary());
        FrameWriter { deflate }
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    let length = u32::try_from(payload.len()).unwrap_or(0) & 0x00ff_ffff;
    frame.push(flags);
    frame.extend_from_slice(&length.to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

impl FrameWriter {
    /// The bytes of `frame` (data longer than 16 MiB - 1 must be split by the caller).
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        Ok(match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = stream_id.to_be_bytes().to_vec();
                payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                payload.extend(self.header_block(headers)?);
                control(SYN_STREAM, *flags, &payload)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = stream_id.to_be_bytes().to_vec();
                payload.extend(self.header_block(headers)?);
                control(SYN_REPLY, *flags, &payload)
            }
            Frame::RstStream { stream_id, status } => {
                let mut payload = stream_id.to_be_bytes().to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, &payload)
            }
            Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut payload = last_good_stream_id.to_be_bytes().to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, &payload)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut bytes = Vec::with_capacity(8 + data.len());
                bytes.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                bytes.push(*flags);
                let length = u32::try_from(data.len()).unwrap_or(0) & 0x00ff_ffff;
                bytes.extend_from_slice(&length.to_be_bytes()[1..]);
                bytes.extend_from_slice(data);
                bytes
            }
            Frame::Ignored { .. } => Vec::new(),
        })
    }

    fn header_block(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = u32::try_from(headers.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        for (name, value) in headers {
            for text in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                plain.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_be_bytes());
                plain.extend_from_slice(text);
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut consumed = 0;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(SpdyError::Deflate)?;
            consumed += usize::try_from(self.deflate.total_in() - before).unwrap_or(0);
            if consumed >= plain.len() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
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
    fn the_dictionary_is_the_specs_1423_bytes() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert_eq!(&dictionary[..11], b"\0\0\0\x07options");
        assert!(dictionary.ends_with(b",*,enq=0."));
        // zlib's DICTID of the SPDY/3 dictionary, which peers check.
        let mut deflate = Compress::new(Compression::default(), true);
        assert_eq!(deflate.set_dictionary(dictionary).ok(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn frames_round_trip_with_one_compression_context_per_direction() {
        let mut writer = FrameWriter::default();
        let mut reader = FrameReader::default();
        let frames = [
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
                data: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            bytes.extend(writer.encode(frame).expect("encoded"));
        }
        // Arriving in pieces of any size.
        let mut read = Vec::new();
        for piece in bytes.chunks(5) {
            reader.push(piece);
            while let Some(frame) = reader.next_frame().expect("parsed") {
                read.push(frame);
            }
        }
        assert_eq!(read, frames);
    }

    #[test]
    fn header_blocks_are_zlib_with_the_spdy_dictionary() {
        // A header block as any SPDY/3 peer deflates it: a zlib stream whose header names the
        // dictionary (FDICT) by its Adler-32.
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(dictionary()).expect("dictionary");
        let mut plain = 1_u32.to_be_bytes().to_vec();
        for text in ["streamtype", "data"] {
            plain.extend_from_slice(&u32::try_from(text.len()).expect("len").to_be_bytes());
            plain.extend_from_slice(text.as_bytes());
        }
        let mut block = Vec::with_capacity(256);
        deflate
            .compress_vec(&plain, &mut block, FlushCompress::Sync)
            .expect("deflated");
        assert_eq!(block[1] & 0x20, 0x20, "FDICT is set");
        let mut payload = 5_u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0; 6]);
        payload.extend(block);
        let mut reader = FrameReader::default();
        reader.push(&control(SYN_STREAM, 0, &payload));
        assert_eq!(
            reader.next_frame().expect("parsed"),
            Some(Frame::SynStream {
                stream_id: 5,
                flags: 0,
                headers: headers(&[("streamtype", "data")]),
            })
        );
    }

    #[test]
    fn other_versions_and_short_frames_are_refused() {
        let mut reader = FrameReader::default();
        reader.push(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert!(matches!(reader.next_frame(), Err(SpdyError::Version(2))));
        let mut reader = FrameReader::default();
        reader.push(&control(RST_STREAM, 0, &[0, 0, 0, 1]));
        assert!(matches!(reader.next_frame(), Err(SpdyError::Malformed(_))));
        let mut reader = FrameReader::default();
        reader.push(&[0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(reader.next_frame().ok(), Some(None), "incomplete: wait");
    }
}
