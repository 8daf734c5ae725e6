//! Minimal HTTP/1.1 message framing over any async byte stream, shared by the fake upstream
//! (server side), the load generator and tests (client side).
//!
//! Role: read one request or response at a time from a buffered connection, with bodies framed
//! by `content-length`, `transfer-encoding: chunked` or (responses only) connection close;
//! keep-alive and pipelining work because unread bytes stay in the connection buffer.
//!
//! Guarantees: heads are parsed by `httparse`; a head over [`MAX_HEAD`] bytes or a body over
//! [`MAX_BODY`] bytes is refused; a message cut short by EOF is an [`Error::Closed`], never a
//! silently truncated body.
//!
//! Non-goals: this is a test tool, not a general HTTP implementation. No HTTP/2, no upgrades,
//! no trailers handed to the caller (they are read and dropped), no header folding.

use std::fmt;
use std::io;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request or response head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 256 * 1024 * 1024;
/// Most header lines accepted in one head.
const MAX_HEADERS: usize = 100;

/// Why a message could not be read.
#[derive(Debug)]
pub enum Error {
    /// The underlying stream failed.
    Io(io::Error),
    /// The peer closed the connection in the middle of a message.
    Closed,
    /// The bytes are not valid HTTP/1.x.
    Malformed(String),
    /// The head or body is over [`MAX_HEAD`] / [`MAX_BODY`].
    TooLarge,
}

/// A request read by [`Conn::read_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent, including any query string.
    pub target: String,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// The status line and headers of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
}

/// A response read by [`Conn::read_response`].
#[derive(Clone, Debug)]
pub struct Response {
    /// Status line and headers.
    pub head: ResponseHead,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// When the read that delivered the head completed.
    pub head_at: Instant,
    /// When the read that delivered the first body byte (or chunk-size line) completed;
    /// `None` for an empty body.
    pub first_body_at: Option<Instant>,
    /// When the last body byte was read.
    pub done_at: Instant,
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(usize),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// A buffered HTTP/1.x connection.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    buf: BytesMut,
    last_read: Instant,
}

// === impl Error ===

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Closed => f.write_str("connection closed mid-message"),
            Error::Malformed(what) => write!(f, "malformed HTTP: {what}"),
            Error::TooLarge => f.write_str("message too large"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

// === impl Request ===

impl Request {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the connection stays open after this exchange (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

// === impl ResponseHead ===

impl ResponseHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the connection can carry another request after this response.
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }

    /// How the body of this response is delimited, given the request method.
    pub fn framing(&self, request_method: &str) -> Result<Framing, Error> {
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        match body_framing(&self.headers)? {
            Framing::Empty => Ok(Framing::UntilClose),
            other => Ok(other),
        }
    }
}

// === impl Response ===

impl Response {
    /// Status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

// === impl Conn ===

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a stream; nothing is read yet.
    pub fn new(io: S) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            last_read: Instant::now(),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream; bytes already buffered are not visible through it.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes read from the stream but not yet consumed as part of a message.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Writes all of `bytes` and flushes.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads more bytes into the buffer; returns how many (0 at EOF).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let n = self.io.read_buf(&mut self.buf).await?;
        self.last_read = Instant::now();
        Ok(n)
    }

    /// Reads and discards everything until the peer closes or the stream fails.
    pub async fn drain_until_eof(&mut self) {
        loop {
            self.buf.clear();
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Reads the next request, body included. `Ok(None)` means the peer closed the connection
    /// cleanly between requests. Answers `expect: 100-continue` before reading the body.
    pub async fn read_request(&mut self) -> Result<Option<Request>, Error> {
        let parsed = loop {
            if let Some(parsed) = parse_request_head(&self.buf)? {
                break parsed;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Error::TooLarge);
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Error::Closed)
                };
            }
        };
        let (consumed, mut request) = parsed;
        self.buf.advance(consumed);
        let framing = body_framing(&request.headers)?;
        let expects_continue = request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && framing != Framing::Empty && self.buf.is_empty() {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        request.body = self.read_body(framing).await?.0;
        Ok(Some(request))
    }

    /// Reads the next response head, skipping interim `1xx` responses (except `101`).
    pub async fn read_response_head(&mut self) -> Result<(ResponseHead, Instant), Error> {
        loop {
            let parsed = loop {
                if let Some(parsed) = parse_response_head(&self.buf)? {
                    break parsed;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Error::TooLarge);
                }
                if self.fill().await? == 0 {
                    return Err(Error::Closed);
                }
            };
            let (consumed, head) = parsed;
            self.buf.advance(consumed);
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok((head, self.last_read));
        }
    }

    /// Reads a whole response to a request made with `request_method`.
    pub async fn read_response(&mut self, request_method: &str) -> Result<Response, Error> {
        let (head, head_at) = self.read_response_head().await?;
        let framing = head.framing(request_method)?;
        let (body, first_body_at) = self.read_body(framing).await?;
        Ok(Response {
            head,
            body,
            head_at,
            first_body_at,
            done_at: Instant::now(),
        })
    }

    /// Reads a body delimited by `framing`; also returns when its first byte arrived.
    pub async fn read_body(
        &mut self,
        framing: Framing,
    ) -> Result<(Vec<u8>, Option<Instant>), Error> {
        match framing {
            Framing::Empty | Framing::Length(0) => Ok((Vec::new(), None)),
            Framing::Length(len) => {
                if len > MAX_BODY {
                    return Err(Error::TooLarge);
                }
                let first = self.first_byte().await?;
                while self.buf.len() < len {
                    if self.fill().await? == 0 {
                        return Err(Error::Closed);
                    }
                }
                Ok((self.buf.split_to(len).to_vec(), Some(first)))
            }
            Framing::UntilClose => {
                let mut first = None;
                let mut body = Vec::new();
                loop {
                    if !self.buf.is_empty() {
                        first.get_or_insert(self.last_read);
                        body.extend_from_slice(&self.buf);
                        self.buf.clear();
                        if body.len() > MAX_BODY {
                            return Err(Error::TooLarge);
                        }
                    }
                    if self.fill().await? == 0 {
                        return Ok((body, first));
                    }
                }
            }
            Framing::Chunked => {
                let first = self.first_byte().await?;
                let body = self.read_chunked().await?;
                Ok((body, Some(first)))
            }
        }
    }

    /// Waits until at least one byte is buffered; returns when it arrived.
    async fn first_byte(&mut self) -> Result<Instant, Error> {
        while self.buf.is_empty() {
            if self.fill().await? == 0 {
                return Err(Error::Closed);
            }
        }
        Ok(self.last_read)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        loop {
            let (consumed, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > MAX_HEAD {
                            return Err(Error::TooLarge);
                        }
                        if self.fill().await? == 0 {
                            return Err(Error::Closed);
                        }
                    }
                    Err(_) => return Err(Error::Malformed("invalid chunk size".into())),
                }
            };
            self.buf.advance(consumed);
            let size = usize::try_from(size).map_err(|_| Error::TooLarge)?;
            if size == 0 {
                self.skip_trailers().await?;
                return Ok(body);
            }
            if body.len().saturating_add(size) > MAX_BODY {
                return Err(Error::TooLarge);
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    return Err(Error::Closed);
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Error::Malformed("chunk not followed by CRLF".into()));
            }
            self.buf.advance(size + 2);
        }
    }

    async fn skip_trailers(&mut self) -> Result<(), Error> {
        loop {
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(end) => self.buf.advance(end + 2),
                None => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(Error::TooLarge);
                    }
                    if self.fill().await? == 0 {
                        return Err(Error::Closed);
                    }
                }
            }
        }
    }
}

// === helpers ===

/// Decodes a complete chunked body (`transfer-encoding: chunked`, as raw bytes after the head).
/// Returns `None` if it is malformed or lacks the terminating zero-size chunk.
pub fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete(found)) => found,
            _ => return None,
        };
        raw = &raw[consumed..];
        let size = usize::try_from(size).ok()?;
        if size == 0 {
            // Trailers (if any) end with an empty line.
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n");
            return match (raw.starts_with(b"\r\n"), end) {
                (true, _) | (false, Some(_)) => Some(body),
                _ => None,
            };
        }
        let chunk = raw.get(..size)?;
        if raw.get(size..size + 2)? != b"\r\n" {
            return None;
        }
        body.extend_from_slice(chunk);
        raw = &raw[size + 2..];
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn keep_alive(version: u8, headers: &[(String, String)]) -> bool {
    if has_token(headers, "connection", "close") {
        return false;
    }
    version >= 1 || has_token(headers, "connection", "keep-alive")
}

/// Body framing from headers alone (RFC 9112 §6.3): chunked wins over content-length.
fn body_framing(headers: &[(String, String)]) -> Result<Framing, Error> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = te.last() {
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(Error::Malformed(format!(
                "unsupported transfer-encoding {last}"
            )))
        };
    }
    let mut length = None;
    for (_, v) in headers.iter().filter(|(k, _)| k == "content-length") {
        let parsed: usize = v
            .trim()
            .parse()
            .map_err(|_| Error::Malformed(format!("bad content-length {v:?}")))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(Error::Malformed("conflicting content-length".into()));
        }
        length = Some(parsed);
    }
    Ok(length.map_or(Framing::Empty, Framing::Length))
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

fn parse_request_head(buf: &[u8]) -> Result<Option<(usize, Request)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(consumed)) => Ok(Some((
            consumed,
            Request {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                version: req.version.unwrap_or(1),
                headers: owned_headers(req.headers),
                body: Vec::new(),
            },
        ))),
        Err(e) => Err(Error::Malformed(e.to_string())),
    }
}

fn parse_response_head(buf: &[u8]) -> Result<Option<(usize, ResponseHead)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(consumed)) => Ok(Some((
            consumed,
            ResponseHead {
                status: resp.code.unwrap_or_default(),
                version: resp.version.unwrap_or(1),
                headers: owned_headers(resp.headers),
            },
        ))),
        Err(e) => Err(Error::Malformed(e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_pipelined_requests_with_both_framings() {
        let (mut client, server) = tokio::io::duplex(64);
        let raw = b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhelloPOST /b?q=1 HTTP/1.1\r\n\
                    Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n\
                    GET /c HTTP/1.0\r\n\r\n";
        let writer = tokio::spawn(async move {
            client.write_all(raw).await?;
            client.shutdown().await
        });
        let mut conn = Conn::new(server);
        let a = conn.read_request().await.ok().flatten();
        let b = conn.read_request().await.ok().flatten();
        let c = conn.read_request().await.ok().flatten();
        let end = conn.read_request().await.ok().flatten();
        assert!(writer.await.is_ok());
        let (Some(a), Some(b), Some(c)) = (a, b, c) else {
            panic!("requests not parsed")
        };
        assert_eq!((a.path(), a.body.as_slice()), ("/a", &b"hello"[..]));
        assert_eq!((b.path(), b.target.as_str()), ("/b", "/b?q=1"));
        assert_eq!(b.body, b"abcde");
        assert!(a.keep_alive() && b.keep_alive());
        assert!(!c.keep_alive());
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn truncated_chunked_response_is_an_error() {
        let (mut peer, local) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            peer.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
                .await?;
            peer.shutdown().await
        });
        let mut conn = Conn::new(local);
        let res = conn.read_response("GET").await;
        assert!(writer.await.is_ok());
        assert!(matches!(res, Err(Error::Closed)), "{res:?}");
    }

    #[test]
    fn dechunk_roundtrip() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"),
            Some(b"abcd".to_vec())
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n"), None);
        assert_eq!(dechunk(b"3\r\nabcX\r\n0\r\n\r\n"), None);
    }
}
