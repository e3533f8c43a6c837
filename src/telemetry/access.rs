//! The access log: one line per request, written without a trip through another thread.
//! On a worker thread lines collect in a thread-local buffer that is written to stdout when
//! it passes 32 KiB and at least every 500 ms (nginx's `buffer=` model); elsewhere a line is
//! written at once. A buffer is written whole under stdout's lock, so lines never
//! interleave with the other log output. The line carries no header values or bodies.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::LogFormat;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

const FLUSH_BYTES: usize = 32 * 1024;
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

thread_local! {
    static BUFFER: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// The formatted `YYYY-MM-DDThh:mm:ss` of the last second seen on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends `YYYY-MM-DDThh:mm:ss.uuuuuuZ` for now, formatting the date part once a second.
fn push_timestamp(buf: &mut Vec<u8>) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let full = rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs));
            c.1 = full[..19].to_string();
            c.0 = secs;
        }
        buf.extend_from_slice(c.1.as_bytes());
    });
    buf.push(b'.');
    push_padded(buf, u64::from(d.subsec_micros()), 6);
    buf.push(b'Z');
}

/// Appends `n` in decimal (no formatting machinery: this runs once per request).
fn push_u64(buf: &mut Vec<u8>, n: u64) {
    push_padded(buf, n, 1);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (at most 20).
fn push_padded(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(digits.len() - width.clamp(1, 20));
    buf.extend_from_slice(&digits[start..]);
}

/// Sets the line format (once, at start-up; JSON otherwise).
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// Makes this thread buffer its access lines; the caller must run [`flusher`] on it.
pub fn buffer_this_thread() {
    BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_none() {
            *b = Some(Vec::with_capacity(FLUSH_BYTES * 2));
        }
    });
}

/// Writes out this thread's buffered lines.
pub fn flush() {
    BUFFER.with(|b| {
        if let Some(buf) = b.borrow_mut().as_mut()
            && !buf.is_empty()
        {
            write_out(buf);
            buf.clear();
        }
    });
}

/// Flushes this thread's buffer periodically; runs for the life of the worker.
pub async fn flusher() {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        flush();
    }
}

fn write_out(bytes: &[u8]) {
    let out = std::io::stdout();
    let mut lock = out.lock();
    // A failing stdout cannot be reported anywhere better; the request is not affected.
    let _ = lock.write_all(bytes);
    let _ = lock.flush();
}

/// One request, as logged.
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub complete: bool,
    pub duration: Duration,
    pub route: &'a str,
    pub upstream: &'a str,
    pub request_id: &'a str,
    pub peer: &'a str,
    pub version: http::Version,
}

/// Appends the line to this thread's buffer (or writes it at once off the workers).
pub fn emit(line: &AccessLine<'_>) {
    let format = FORMAT.get().copied().unwrap_or_default();
    BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        match b.as_mut() {
            Some(buf) => {
                render(buf, line, format);
                if buf.len() >= FLUSH_BYTES {
                    write_out(buf);
                    buf.clear();
                }
            }
            None => {
                let mut buf = Vec::with_capacity(512);
                render(&mut buf, line, format);
                write_out(&buf);
            }
        }
    });
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Most values need no escaping: copied as they are. Otherwise serde_json escapes
    // control characters and quotes; writing to a Vec cannot fail.
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn render(buf: &mut Vec<u8>, l: &AccessLine<'_>, format: LogFormat) {
    // Milliseconds with three decimals, from integer microseconds (no float formatting).
    let micros = l.duration.as_micros();
    let (ms, frac) = (micros / 1000, micros % 1000);
    match format {
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            push_timestamp(buf);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"event\":\"access\",\"method\":");
            json_str(buf, l.method);
            buf.extend_from_slice(b",\"path\":");
            json_str(buf, l.path);
            buf.extend_from_slice(b",\"status\":");
            push_u64(buf, u64::from(l.status));
            buf.extend_from_slice(b",\"bytes\":");
            push_u64(buf, l.bytes);
            buf.extend_from_slice(if l.complete {
                b",\"complete\":true,\"duration_ms\":"
            } else {
                b",\"complete\":false,\"duration_ms\":"
            });
            push_u64(buf, u64::try_from(ms).unwrap_or(u64::MAX));
            buf.push(b'.');
            push_padded(buf, frac as u64, 3);
            buf.extend_from_slice(b",\"route\":");
            json_str(buf, l.route);
            buf.extend_from_slice(b",\"upstream\":");
            json_str(buf, l.upstream);
            buf.extend_from_slice(b",\"request_id\":");
            json_str(buf, l.request_id);
            buf.extend_from_slice(b",\"peer\":");
            json_str(buf, l.peer);
            buf.extend_from_slice(b",\"version\":\"");
            buf.extend_from_slice(version_str(l.version).as_bytes());
            buf.extend_from_slice(b"\",\"target\":\"varco::access\"}\n");
        }
        LogFormat::Pretty => {
            push_timestamp(buf);
            let _ = writeln!(
                buf,
                "  INFO varco::access: {} {} {} {}B {ms}.{frac:03}ms route={} upstream={} request_id={} peer={} {}{}",
                l.method,
                l.path.escape_debug(),
                l.status,
                l.bytes,
                l.route,
                l.upstream,
                l.request_id,
                l.peer,
                version_str(l.version),
                if l.complete { "" } else { " (incomplete)" }
            );
        }
    }
}

/// `YYYY-MM-DDThh:mm:ss.uuuuuuZ` (UTC).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let date = crate::identity::Date::from_days_since_epoch((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_837_464_718_452);
        assert_eq!(rfc3339_utc(t), "2026-11-28T03:44:24.718452Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_utc(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn json_lines_escape_untrusted_text() {
        let mut buf = Vec::new();
        let line = AccessLine {
            method: "GET",
            path: "/a\"b\n",
            status: 200,
            bytes: 5,
            complete: true,
            duration: Duration::from_micros(1500),
            route: "route[0]",
            upstream: "app",
            request_id: "r1",
            peer: "127.0.0.1",
            version: http::Version::HTTP_11,
        };
        render(&mut buf, &line, LogFormat::Json);
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["path"], "/a\"b\n");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["target"], "varco::access");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 5);
        assert_eq!(v["complete"], true);
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["peer"], "127.0.0.1");
        assert_eq!(v["version"], "HTTP/1.1");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[19..20], &ts[26..]), (27, ".", "Z"), "{ts}");
    }

    #[test]
    fn numbers_are_written_in_full() {
        let mut buf = Vec::new();
        for (n, width) in [(0, 1), (7, 3), (1234, 3), (5, 6), (u64::MAX, 1), (0, 6)] {
            buf.clear();
            push_padded(&mut buf, n, width);
            assert_eq!(
                String::from_utf8(buf.clone()).unwrap(),
                format!("{n:0width$}")
            );
        }
        let mut buf = Vec::new();
        let line = AccessLine {
            method: "POST",
            path: "/",
            status: 503,
            bytes: 0,
            complete: false,
            duration: Duration::from_micros(12_003_045),
            route: "internal",
            upstream: "-",
            request_id: "r2",
            peer: "::1",
            version: http::Version::HTTP_2,
        };
        render(&mut buf, &line, LogFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["duration_ms"], 12003.045);
        assert_eq!(v["complete"], false);
        assert_eq!(v["bytes"], 0);
        assert_eq!(v["status"], 503);
    }
}
