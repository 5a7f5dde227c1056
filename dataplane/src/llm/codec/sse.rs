//! Server-sent events framing: splits a byte stream into complete events, whatever the chunk
//! boundaries, without copying more than once.

use bytes::{Bytes, BytesMut};

/// Largest event held while waiting for its end; beyond it the upstream is not speaking SSE.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub struct EventSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a terminator.
    scanned: usize,
}

impl EventSplitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, terminator included.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let start = self.scanned.saturating_sub(3);
        let hay = &self.buf[start..];
        let mut i = 0;
        while let Some(p) = memchr::memchr(b'\n', &hay[i..]) {
            let at = i + p;
            // "\n\n" or "\n\r\n" ends an event.
            let end = if hay.get(at + 1) == Some(&b'\n') {
                Some(at + 2)
            } else if hay.get(at + 1) == Some(&b'\r') && hay.get(at + 2) == Some(&b'\n') {
                Some(at + 3)
            } else {
                None
            };
            if let Some(end) = end {
                self.scanned = 0;
                return Some(self.buf.split_to(start + end).freeze());
            }
            i = at + 1;
        }
        self.scanned = self.buf.len();
        None
    }

    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Whatever is left when the stream ends without a final blank line.
    pub fn take_rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// The payload of an event's `data:` line(s); `None` for comments and events without data.
/// Multi-line data is joined with `\n` as the SSE spec says.
pub fn data_of(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut found: Option<std::borrow::Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"data:") else {
            continue;
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        found = Some(match found {
            None => std::borrow::Cow::Borrowed(rest),
            Some(prev) => {
                let mut v = prev.into_owned();
                v.push(b'\n');
                v.extend_from_slice(rest);
                std::borrow::Cow::Owned(v)
            }
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":2}\r\n\r\ndata: x\ndata: y\n\ndata: [DONE]\n\n";

    fn events_with_splits(splits: &[usize]) -> Vec<Bytes> {
        let mut s = EventSplitter::default();
        let mut out = Vec::new();
        let mut last = 0;
        for &at in splits.iter().chain(std::iter::once(&STREAM.len())) {
            s.push(&STREAM[last..at]);
            last = at;
            while let Some(e) = s.next_event() {
                out.push(e);
            }
        }
        assert_eq!(s.pending(), 0);
        out
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = events_with_splits(&[]);
        assert_eq!(whole.len(), 5);
        assert_eq!(data_of(&whole[0]).as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(data_of(&whole[1]), None);
        assert_eq!(data_of(&whole[2]).as_deref(), Some(&b"{\"b\":2}"[..]));
        assert_eq!(data_of(&whole[3]).as_deref(), Some(&b"x\ny"[..]));
        assert_eq!(data_of(&whole[4]).as_deref(), Some(&b"[DONE]"[..]));
        for a in 0..STREAM.len() {
            for b in a..STREAM.len() {
                assert_eq!(events_with_splits(&[a, b]), whole, "split at {a},{b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut s = EventSplitter::default();
        let mut n = 0;
        for b in STREAM {
            s.push(std::slice::from_ref(b));
            while s.next_event().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 5);
    }
}
