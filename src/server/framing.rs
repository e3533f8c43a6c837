//! A watch on HTTP/1 request framing, fed with the bytes a connection reads, before hyper
//! parses them. hyper already refuses most malformed framing, but it silently repairs two
//! cases that RFC 9112 §6.3 calls smuggling signals: `Content-Length` together with
//! `Transfer-Encoding` (hyper drops the length) and repeated identical `Content-Length`
//! headers (hyper keeps one). The gateway refuses both with 400 and closes the connection,
//! so this watcher follows the message boundaries (head, fixed-length body, chunked body
//! with trailers) and raises a flag the request handler checks.
//!
//! It is pure: bytes in, a verdict out. Whatever it cannot follow (an HTTP/2 preface, a
//! head it cannot parse — which hyper refuses anyway) switches it off; it never blocks or
//! alters the byte stream.

/// Largest request head the watcher buffers; past it, hyper answers 431 anyway.
const MAX_HEAD: usize = 256 * 1024;
/// Longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;
const MAX_HEADERS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after chunk data: how many of its bytes are still expected.
    ChunkEnd(u8),
    Trailers,
    Off,
}

/// Follows one HTTP/1 connection's request stream.
#[derive(Debug)]
pub struct FramingWatch {
    state: State,
    line: Vec<u8>,
    violation: bool,
}

impl Default for FramingWatch {
    fn default() -> Self {
        Self::new()
    }
}

/// What a complete request head says about framing.
#[derive(Debug, PartialEq, Eq)]
enum HeadVerdict {
    Violation,
    /// Next state after the head.
    Next(State),
}

fn inspect_head(req: &httparse::Request<'_, '_>) -> HeadVerdict {
    let mut content_lengths = 0usize;
    let mut length: Option<u64> = None;
    let mut transfer_encodings = 0usize;
    let mut chunked_last = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_lengths += 1;
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encodings += 1;
            chunked_last = std::str::from_utf8(h.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
        }
    }
    if content_lengths > 1 || (content_lengths > 0 && transfer_encodings > 0) {
        return HeadVerdict::Violation;
    }
    if transfer_encodings > 0 && (req.version != Some(1) || !chunked_last) {
        return HeadVerdict::Violation;
    }
    // An `Upgrade` header does not switch the watch off: the switch happens only if the
    // gateway relays a 101, and until then (or when it does not) the next bytes are
    // requests like any other. After a real switch the watch reads tunnel bytes, which
    // at worst stop it (unparsable) — no request follows a switch on that connection.
    if transfer_encodings > 0 {
        return HeadVerdict::Next(State::ChunkSize);
    }
    match (content_lengths, length) {
        (0, _) | (_, Some(0)) => HeadVerdict::Next(State::Head),
        (_, Some(n)) => HeadVerdict::Next(State::Body(n)),
        // An unparsable length: hyper refuses it.
        (_, None) => HeadVerdict::Next(State::Off),
    }
}

impl FramingWatch {
    pub fn new() -> FramingWatch {
        FramingWatch {
            state: State::Head,
            line: Vec::new(),
            violation: false,
        }
    }

    /// Whether a framing violation was seen on this connection.
    pub fn violation(&self) -> bool {
        self.violation
    }

    /// Whether the watcher still follows the stream.
    pub fn active(&self) -> bool {
        self.state != State::Off
    }

    /// Feeds the next bytes read from the client. Returns true on the first violation.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let before = self.violation;
        while !bytes.is_empty() && self.state != State::Off {
            bytes = match self.state {
                State::Head => self.feed_head(bytes),
                State::Body(left) => {
                    let take = (bytes.len() as u64).min(left);
                    self.state = if take == left {
                        State::Head
                    } else {
                        State::Body(left - take)
                    };
                    &bytes[take as usize..]
                }
                State::ChunkSize => self.feed_chunk_size(bytes),
                State::ChunkData(left) => {
                    let take = (bytes.len() as u64).min(left);
                    self.state = if take == left {
                        State::ChunkEnd(2)
                    } else {
                        State::ChunkData(left - take)
                    };
                    &bytes[take as usize..]
                }
                State::ChunkEnd(n) => {
                    // Tolerate a bare LF as hyper does: the end is the LF.
                    let b = bytes[0];
                    self.state = match (n, b) {
                        (2, b'\r') => State::ChunkEnd(1),
                        (_, b'\n') => State::ChunkSize,
                        _ => State::Off,
                    };
                    &bytes[1..]
                }
                State::Trailers => self.feed_trailers(bytes),
                State::Off => &[],
            };
        }
        !before && self.violation
    }

    fn feed_head<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.line.is_empty() {
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            let skip = bytes
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if skip == bytes.len() {
                return &[];
            }
            if bytes[skip..].starts_with(b"PRI * HTTP/2.0") {
                self.state = State::Off;
                return &[];
            }
            let start = self.line.len();
            self.line.extend_from_slice(&bytes[skip..]);
            return self.parse_head(start, bytes.len() - skip, bytes);
        }
        let start = self.line.len();
        self.line.extend_from_slice(bytes);
        self.parse_head(start, bytes.len(), bytes)
    }

    /// Parses the buffered head; `added` bytes at `start` came from the tail of `bytes`.
    fn parse_head<'a>(&mut self, start: usize, added: usize, bytes: &'a [u8]) -> &'a [u8] {
        // Most heads fit the stack array; only a head with more headers pays for the heap.
        let mut small = [httparse::EMPTY_HEADER; 64];
        let mut large;
        let mut req = httparse::Request::new(&mut small);
        let mut parsed = req.parse(&self.line);
        if matches!(parsed, Err(httparse::Error::TooManyHeaders)) {
            large = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            req = httparse::Request::new(&mut large);
            parsed = req.parse(&self.line);
        }
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                let verdict = inspect_head(&req);
                // Bytes of this read that belong after the head.
                let used_of_added = len.saturating_sub(start);
                let rest_from = bytes.len() - added + used_of_added.min(added);
                self.line.clear();
                match verdict {
                    HeadVerdict::Violation => {
                        self.violation = true;
                        self.state = State::Off;
                        &[]
                    }
                    HeadVerdict::Next(next) => {
                        self.state = next;
                        &bytes[rest_from..]
                    }
                }
            }
            Ok(httparse::Status::Partial) if self.line.len() <= MAX_HEAD => &[],
            _ => {
                // Unparsable or oversized: hyper refuses it; stop following.
                self.state = State::Off;
                self.line.clear();
                &[]
            }
        }
    }

    /// Collects one line (up to LF) into `self.line`; returns the line once complete.
    fn take_line<'a>(&mut self, bytes: &'a [u8]) -> (Option<Vec<u8>>, &'a [u8]) {
        match bytes.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&bytes[..i]);
                let line = std::mem::take(&mut self.line);
                (Some(line), &bytes[i + 1..])
            }
            None => {
                self.line.extend_from_slice(bytes);
                if self.line.len() > MAX_LINE {
                    self.state = State::Off;
                }
                (None, &[])
            }
        }
    }

    fn feed_chunk_size<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (line, rest) = self.take_line(bytes);
        if let Some(line) = line {
            let text = String::from_utf8_lossy(&line);
            let size = text
                .trim_end_matches('\r')
                .split(';')
                .next()
                .map(str::trim)
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            self.state = match size {
                Some(0) => State::Trailers,
                Some(n) => State::ChunkData(n),
                None => State::Off,
            };
        }
        rest
    }

    fn feed_trailers<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (line, rest) = self.take_line(bytes);
        if let Some(line) = line
            && (line.is_empty() || line == b"\r")
        {
            self.state = State::Head;
        }
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_all(input: &[u8]) -> FramingWatch {
        let mut w = FramingWatch::new();
        w.feed(input);
        w
    }

    /// Feeding the same input split at every position gives the same verdict.
    fn verdict_any_split(input: &[u8]) -> bool {
        let whole = watch_all(input).violation();
        for cut in 1..input.len() {
            let mut w = FramingWatch::new();
            w.feed(&input[..cut]);
            w.feed(&input[cut..]);
            assert_eq!(w.violation(), whole, "split at {cut}");
        }
        whole
    }

    #[test]
    fn clean_pipelines_pass() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!verdict_any_split(input));
        let w = watch_all(input);
        assert!(w.active());
        assert_eq!(w.state, State::Head);
    }

    #[test]
    fn length_with_chunked_is_a_violation() {
        assert!(verdict_any_split(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        assert!(verdict_any_split(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
        ));
    }

    #[test]
    fn repeated_lengths_are_a_violation_even_when_equal() {
        assert!(verdict_any_split(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"
        ));
    }

    #[test]
    fn a_smuggled_second_head_is_seen() {
        // The body of the first request is 5 bytes; the second request carries both.
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(verdict_any_split(input));
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_parsed() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        assert!(!verdict_any_split(&input));
    }

    #[test]
    fn http2_switches_the_watch_off_but_an_upgrade_header_does_not() {
        let w = watch_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(!w.active() && !w.violation());
        // An Upgrade that was never granted cannot hide the next request's framing.
        assert!(verdict_any_split(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n\
POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        let w = watch_all(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        assert!(w.violation());
    }

    #[test]
    fn non_chunked_transfer_encoding_is_a_violation() {
        assert!(verdict_any_split(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
        ));
        assert!(verdict_any_split(
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The verdict does not depend on how the bytes arrive.
        #[test]
        fn verdict_is_independent_of_read_boundaries(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut whole = FramingWatch::new();
            whole.feed(&data);
            let mut pieces = FramingWatch::new();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            points.sort_unstable();
            let mut at = 0;
            for p in points {
                pieces.feed(&data[at..p]);
                at = p;
            }
            pieces.feed(&data[at..]);
            prop_assert_eq!(whole.violation(), pieces.violation());
        }

        /// Generated pipelines of well-framed requests never raise the flag, and ones with
        /// a smuggling head always do.
        #[test]
        fn generated_pipelines(bodies in proptest::collection::vec("[a-z]{0,20}", 1..5), bad in any::<bool>()) {
            let mut wire = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                if i % 2 == 0 {
                    wire.extend_from_slice(format!("POST /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}", b.len()).as_bytes());
                } else if b.is_empty() {
                    // An empty body is just the last chunk.
                    wire.extend_from_slice(format!("POST /{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes());
                } else {
                    wire.extend_from_slice(format!("POST /{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{b}\r\n0\r\n\r\n", b.len()).as_bytes());
                }
            }
            if bad {
                wire.extend_from_slice(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
            }
            let mut w = FramingWatch::new();
            w.feed(&wire);
            prop_assert_eq!(w.violation(), bad);
        }
    }
}
