//! Incremental Server-Sent Events parsing for streamed completions.
//!
//! The upstream's bytes arrive in arbitrary pieces: an event, a line, even a `\r\n` pair can be
//! split across TCP reads. [`SseParser::feed`] accepts any split and returns each *complete* event
//! together with its exact raw bytes, so the proxy forwards events byte-for-byte (or drops one it
//! added itself) and later guards can inspect every event. Bytes of an event that is not complete
//! yet are held until its terminating blank line arrives — an SSE client cannot act on a partial
//! event anyway, so this adds no visible latency.
//!
//! Guarantees: the concatenation of all returned `raw` bytes plus [`SseParser::pending`] equals
//! the input; the events returned do not depend on how the input was split. One event is bounded
//! by `max_event_bytes`; a larger one is an error, never unbounded memory.

use bytes::{Bytes, BytesMut};

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The exact bytes of the event, including its terminating blank line (and any blank lines
    /// that preceded it).
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; `None` when the event had no data line.
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    EventTooLarge { limit: usize },
}

/// A push parser: feed bytes, get events.
#[derive(Debug)]
pub struct SseParser {
    /// Raw bytes of the event being read: complete lines and the current partial line.
    buf: BytesMut,
    /// Start of the current (incomplete) line within `buf`.
    line_start: usize,
    /// The previous byte was a `\r` line ending; a `\n` right after it belongs to it.
    after_cr: bool,
    /// That `\r` ended an event, which is emitted once we know whether a `\n` follows.
    emit_after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    /// The event being read has at least one non-blank line.
    has_content: bool,
    max_event_bytes: usize,
}

enum Line {
    Blank,
    Ignored,
    Data(String),
    Event(String),
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            line_start: 0,
            after_cr: false,
            emit_after_cr: false,
            event: None,
            data: None,
            has_content: false,
            max_event_bytes,
        }
    }

    /// Feed the next piece of the stream; complete events are appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut i = 0;
        while i < input.len() {
            if self.after_cr {
                self.after_cr = false;
                if input[i] == b'\n' {
                    self.buf.extend_from_slice(b"\n");
                    self.line_start = self.buf.len();
                    i += 1;
                }
                if self.emit_after_cr {
                    self.emit_after_cr = false;
                    self.emit(out);
                }
                continue;
            }
            let rest = &input[i..];
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(j) => {
                    let eol = rest[j];
                    self.buf.extend_from_slice(&rest[..=j]);
                    i += j + 1;
                    let line = parse_line(&self.buf[self.line_start..self.buf.len() - 1]);
                    self.line_start = self.buf.len();
                    let complete = self.apply(line);
                    if eol == b'\r' {
                        self.after_cr = true;
                        self.emit_after_cr = complete;
                    } else if complete {
                        self.emit(out);
                    }
                }
                None => {
                    self.buf.extend_from_slice(rest);
                    i = input.len();
                }
            }
            if self.buf.len() > self.max_event_bytes {
                return Err(SseError::EventTooLarge {
                    limit: self.max_event_bytes,
                });
            }
        }
        Ok(())
    }

    /// End of stream: an event ended by a final `\r` is complete now.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.after_cr && self.emit_after_cr {
            self.after_cr = false;
            self.emit_after_cr = false;
            self.emit(out);
        }
    }

    /// Bytes held back: a partial event.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// True when nothing but blank separator lines is held.
    pub fn is_idle(&self) -> bool {
        !self.has_content && self.buf.iter().all(|b| *b == b'\n' || *b == b'\r')
    }

    /// Take the held bytes, resetting the parser (e.g. to flush them at end of stream).
    pub fn take_pending(&mut self) -> Bytes {
        self.line_start = 0;
        self.after_cr = false;
        self.emit_after_cr = false;
        self.event = None;
        self.data = None;
        self.has_content = false;
        self.buf.split().freeze()
    }

    /// Apply one line; true when it completes an event.
    fn apply(&mut self, line: Line) -> bool {
        match line {
            Line::Blank => return self.has_content,
            Line::Ignored => {}
            Line::Data(value) => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value),
            },
            Line::Event(value) => self.event = Some(value),
        }
        self.has_content = true;
        false
    }

    fn emit(&mut self, out: &mut Vec<SseEvent>) {
        self.line_start = 0;
        self.has_content = false;
        out.push(SseEvent {
            raw: self.buf.split().freeze(),
            event: self.event.take(),
            data: self.data.take(),
        });
    }
}

fn parse_line(line: &[u8]) -> Line {
    if line.is_empty() {
        return Line::Blank;
    }
    if line[0] == b':' {
        return Line::Ignored; // comment, forwarded verbatim
    }
    let (field, value) = match line.iter().position(|b| *b == b':') {
        Some(i) => {
            let v = &line[i + 1..];
            (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
        }
        None => (line, &[][..]),
    };
    match field {
        b"data" => Line::Data(String::from_utf8_lossy(value).into_owned()),
        b"event" => Line::Event(String::from_utf8_lossy(value).into_owned()),
        _ => Line::Ignored, // id, retry, unknown fields: forwarded verbatim, not interpreted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, Vec<u8>) {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out);
        (out, p.pending().to_vec())
    }

    const STREAM: &[u8] = b": comment\n\ndata: {\"a\":1}\n\nevent: x\ndata: l1\ndata: l2\n\n\ndata: crlf\r\n\r\ndata: cr\r\rdata: [DONE]\n\ndata: partial";

    #[test]
    fn events_and_raw_bytes() {
        let (events, pending) = parse_all(&[STREAM]);
        let data: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(
            data,
            vec![
                None,
                Some("{\"a\":1}".into()),
                Some("l1\nl2".into()),
                Some("crlf".into()),
                Some("cr".into()),
                Some("[DONE]".into())
            ]
        );
        assert_eq!(events[2].event.as_deref(), Some("x"));
        let mut joined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        joined.extend_from_slice(&pending);
        assert_eq!(joined, STREAM);
        assert_eq!(pending, b"data: partial");
    }

    /// The chunking-invariance rule: every split point, and one byte at a time, give the same
    /// events as the whole body.
    #[test]
    fn split_at_every_offset_gives_identical_events() {
        let (whole, whole_pending) = parse_all(&[STREAM]);
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            let (events, pending) = parse_all(&[a, b]);
            assert_eq!(events, whole, "split at {cut}");
            assert_eq!(pending, whole_pending);
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&bytes).0, whole);
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(&[b'x'; 64], &mut out).is_err());
    }

    #[test]
    fn idle_and_partial() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"data: x\n\n\n", &mut out).unwrap();
        assert!(p.is_idle());
        p.feed(b"data: y", &mut out).unwrap();
        assert!(!p.is_idle());
    }
}
