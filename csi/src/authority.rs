//! Clients that dial a unix socket by its bare path with grpc-go send that path as the HTTP/2
//! `:authority`, e.g. `/var/lib/kubelet/plugins_registry/<driver>-reg.sock`. A path is not a
//! valid authority (RFC 9113 8.3.1), and the Rust HTTP/2 stack answers such a request with
//! RST_STREAM(PROTOCOL_ERROR). Kubelet does so on the plugin registration socket to this day
//! (1.37: `pkg/kubelet/pluginmanager/operationexecutor`), so without this layer the driver never
//! registers; before 1.26 it did so on every CSI call too (kubernetes#112597), and CSI tools built
//! with an older grpc-go (grpcurl 1.8) still do.
//!
//! [`AuthorityFix`] wraps the server side of each connection and rewrites the request header
//! blocks the client sends: an invalid `:authority` becomes `localhost`, everything else is
//! passed on unchanged. Header blocks are HPACK-compressed against a table both peers keep, so
//! every block is decoded with the client's table state and re-encoded as plain literals that
//! never touch the server's table; both tables stay consistent. Anything unexpected switches the
//! connection to pass-through, which is exactly the behaviour without this layer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's initial value; the server never lowers it.
const MAX_FRAME: usize = 16_384;

/// A header block being collected from HEADERS + CONTINUATION frames.
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    raw: Vec<u8>,
}

/// The client-to-server byte stream transformation, independent of any I/O.
pub struct Rewriter {
    decoder: loona_hpack::Decoder<'static>,
    preface_left: usize,
    input: Vec<u8>,
    pending: Option<Pending>,
    passthrough: bool,
    /// How many `:authority` values were replaced, for tests and logs.
    pub rewritten: u64,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("passthrough", &self.passthrough)
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            decoder: loona_hpack::Decoder::new(),
            preface_left: PREFACE_LEN,
            input: Vec::new(),
            pending: None,
            passthrough: false,
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// Consumes bytes from the client and appends what the server should see to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.input.extend_from_slice(bytes);
        let preface = self.preface_left.min(self.input.len());
        out.extend(self.input.drain(..preface));
        self.preface_left -= preface;
        while !self.passthrough && self.input.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            if self.input.len() < FRAME_HEADER_LEN + len {
                return;
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_LEN + len).collect();
            self.frame(frame, out);
        }
        if self.passthrough {
            if let Some(pending) = self.pending.take() {
                out.extend(pending.raw);
            }
            out.append(&mut self.input);
        }
    }

    fn frame(&mut self, frame: Vec<u8>, out: &mut Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        match (kind, self.pending.as_mut()) {
            (HEADERS, None) => {
                let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                    return self.give_up(frame, out);
                };
                let block = fragment.to_vec();
                self.pending = Some(Pending {
                    stream,
                    flags,
                    priority,
                    block,
                    raw: frame,
                });
            }
            (CONTINUATION, Some(pending)) if pending.stream == stream => {
                pending.block.extend_from_slice(payload);
                pending.raw.extend_from_slice(&frame);
            }
            (HEADERS | CONTINUATION, _) => return self.give_up(frame, out),
            (_, Some(_)) => return self.give_up(frame, out),
            (_, None) => {
                out.extend_from_slice(&frame);
                return;
            }
        }
        if flags & END_HEADERS != 0
            && let Some(pending) = self.pending.take()
        {
            self.emit(pending, out);
        }
    }

    fn emit(&mut self, pending: Pending, out: &mut Vec<u8>) {
        let headers = match self.decoder.decode(&pending.block) {
            Ok(headers) => headers,
            Err(_) => {
                // The table state is unknown from here on: stop interpreting this connection.
                self.passthrough = true;
                out.extend(pending.raw);
                return;
            }
        };
        let mut block = Vec::with_capacity(pending.block.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                self.rewritten += 1;
                b"localhost"
            } else {
                value
            };
            // Literal Header Field without Indexing, New Name (RFC 7541 6.2.2): the server's
            // table is never touched, so it stays consistent whatever the client's holds.
            block.push(0);
            push_string(&mut block, name);
            push_string(&mut block, value);
        }
        let mut first = true;
        let mut chunks = block.chunks(MAX_FRAME - 5).peekable();
        if chunks.peek().is_none() {
            write_frame(
                out,
                HEADERS,
                (pending.flags & END_STREAM) | END_HEADERS,
                pending.stream,
                &[],
            );
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let end_headers = if last { END_HEADERS } else { 0 };
            if first {
                let mut payload = Vec::with_capacity(chunk.len() + 5);
                let mut flags = (pending.flags & END_STREAM) | end_headers;
                if let Some(priority) = pending.priority {
                    payload.extend_from_slice(&priority);
                    flags |= PRIORITY;
                }
                payload.extend_from_slice(chunk);
                write_frame(out, HEADERS, flags, pending.stream, &payload);
                first = false;
            } else {
                write_frame(out, CONTINUATION, end_headers, pending.stream, chunk);
            }
        }
    }

    fn give_up(&mut self, frame: Vec<u8>, out: &mut Vec<u8>) {
        self.passthrough = true;
        if let Some(pending) = self.pending.take() {
            out.extend(pending.raw);
        }
        out.extend(frame);
    }
}

/// The priority fields and the header block fragment of a HEADERS payload, padding removed.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let (pad, mut rest) = if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first()?;
        (pad as usize, rest)
    } else {
        (0, payload)
    };
    rest = rest.get(..rest.len().checked_sub(pad)?)?;
    let priority = if flags & PRIORITY != 0 {
        let (fields, fragment) = rest.split_at_checked(5)?;
        rest = fragment;
        Some(<[u8; 5]>::try_from(fields).ok()?)
    } else {
        None
    };
    Some((priority, rest))
}

/// An HPACK string literal without Huffman coding.
fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(loona_hpack::encoder::encode_integer(bytes.len(), 7));
    out.extend_from_slice(bytes);
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A server-side connection whose incoming HTTP/2 request headers pass through a [`Rewriter`].
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    ready: Vec<u8>,
    eof: bool,
}

impl<S> std::fmt::Debug for AuthorityFix<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("rewritten", &self.rewriter.rewritten)
            .finish_non_exhaustive()
    }
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection, before the client has sent its connection preface.
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = buf.remaining().min(this.ready.len());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
            if chunk_buf.filled().is_empty() {
                // The client closed: hand over whatever incomplete frame is left, as is.
                this.eof = true;
                this.rewriter.passthrough = true;
                this.rewriter.feed(&[], &mut this.ready);
            } else {
                this.rewriter.feed(chunk_buf.filled(), &mut this.ready);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> tonic::transport::server::Connected for AuthorityFix<S> {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn headers_frame(block: &[u8], flags: u8, stream: u32) -> Vec<u8> {
        let mut frame = Vec::new();
        write_frame(&mut frame, HEADERS, flags, stream, block);
        frame
    }

    /// Decodes what the server receives, frame by frame, with the server's own table.
    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn server_view(bytes: &[u8]) -> Vec<(u32, Headers)> {
        assert_eq!(&bytes[..PREFACE_LEN], PREFACE);
        let mut decoder = loona_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE_LEN..];
        let mut blocks = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (frame, tail) = rest.split_at(FRAME_HEADER_LEN + len);
            if frame[3] == HEADERS {
                let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
                let (_, fragment) =
                    split_headers_payload(frame[4], &frame[FRAME_HEADER_LEN..]).unwrap();
                blocks.push((stream, decoder.decode(fragment).unwrap()));
            }
            rest = tail;
        }
        blocks
    }

    fn authority(headers: &Headers) -> &[u8] {
        &headers.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_across_indexed_requests() {
        // Encoded the way grpc-go's encoder does it: the first request adds :path, :authority
        // and content-type to the dynamic table (literal with incremental indexing, indexed
        // name); the second refers to the table entries by index.
        // host path: a header's text, never opened.
        const SOCKET: &[u8] = b"/var/lib/kubelet/plugins/secrets-store.csi.deckhouse.io/csi.sock";
        let literal = |name_index: u8, value: &[u8]| {
            let mut bytes = vec![0x40 | name_index];
            push_string(&mut bytes, value);
            bytes
        };
        let mut first = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        first.extend(literal(4, b"/csi.v1.Node/NodeGetInfo")); // :path
        first.extend(literal(1, SOCKET)); // :authority
        first.extend(literal(31, b"application/grpc")); // content-type
        // Dynamic table now: 62 content-type, 63 :authority, 64 :path.
        let mut second = vec![0x83, 0x86];
        second.extend(literal(4, b"/csi.v1.Node/NodePublishVolume"));
        // Now: 62 :path (new), 63 content-type, 64 :authority.
        second.extend([0x80 | 64, 0x80 | 63]);
        assert!(
            second.len() < first.len(),
            "the second block refers to the table"
        );

        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&first, END_HEADERS, 1));
        let mut data = Vec::new();
        write_frame(&mut data, 0x0, END_STREAM, 1, b"grpc-body");
        input.extend(&data);
        input.extend(headers_frame(&second, END_HEADERS | END_STREAM, 3));

        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        // Byte by byte: frames split across reads must come out whole.
        for byte in &input {
            rewriter.feed(std::slice::from_ref(byte), &mut out);
        }
        assert_eq!(rewriter.rewritten, 2);
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 2);
        for (_, headers) in &blocks {
            assert_eq!(authority(headers), b"localhost");
            assert_eq!(headers[0], (b":method".to_vec(), b"POST".to_vec()));
        }
        assert_eq!(blocks[1].1[2].1, b"/csi.v1.Node/NodePublishVolume");
        assert_eq!(
            blocks[1].1[4],
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            "tables agree"
        );
        assert!(
            out.windows(data.len()).any(|w| w == data.as_slice()),
            "DATA frames pass unchanged"
        );
    }

    #[test]
    fn valid_authorities_and_padding_and_priority_are_preserved() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(vec![
            (&b":authority"[..], &b"localhost:50051"[..]),
            (b":path", b"/x"),
        ]);
        let mut payload = vec![3u8]; // pad length
        payload.extend([0x80, 0, 0, 1, 16]); // exclusive dependency on stream 1, weight 16
        payload.extend(&block);
        payload.extend([0, 0, 0]);
        let mut frame = Vec::new();
        write_frame(
            &mut frame,
            HEADERS,
            END_HEADERS | PADDED | PRIORITY,
            5,
            &payload,
        );
        let mut input = PREFACE.to_vec();
        input.extend(frame);

        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        rewriter.feed(&input, &mut out);
        assert_eq!(rewriter.rewritten, 0);
        assert_eq!(
            out[PREFACE_LEN + 4],
            END_HEADERS | PRIORITY,
            "padding dropped, priority kept"
        );
        assert_eq!(
            &out[PREFACE_LEN + 9..PREFACE_LEN + 14],
            &[0x80, 0, 0, 1, 16]
        );
        let blocks = server_view(&out);
        assert_eq!(authority(&blocks[0].1), b"localhost:50051");
    }

    #[test]
    fn garbage_switches_to_pass_through_unchanged() {
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            END_HEADERS,
            1,
        ));
        input.extend(b"trailing bytes");
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        rewriter.feed(&input, &mut out);
        assert_eq!(out, input);
    }
}
