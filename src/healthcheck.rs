//! `varco healthcheck`: asks a running gateway on this host whether it is alive (or ready),
//! for a container's `HEALTHCHECK` where no curl is installed. One `GET` over HTTP or HTTPS
//! to a loopback address, `Connection: close`, a deadline for the whole exchange; healthy
//! means a `200` status line.
//!
//! Over HTTPS the server's certificate is not verified: the probe talks to the gateway in
//! its own container over loopback (only loopback hosts are accepted), where the certificate
//! names the public host and is signed by whatever the operator uses. The answer's status
//! is all that is read; nothing is sent but the path.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a health check failed (the message is printed; exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("not a URL this probe takes: {0} (http:// or https:// to a loopback address)")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::ErrorKind),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is not HTTP")]
    NotHttp,
    #[error("unhealthy: status {0}")]
    Status(u16),
}

/// A parsed probe URL: scheme, loopback address, path.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    /// `http(s)://<loopback ip or localhost>[:port]/path`; anything else is refused.
    pub fn parse(url: &str) -> Result<Target, HealthError> {
        let bad = || HealthError::Url(url.chars().take(200).collect());
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => port(p).ok_or_else(bad)?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, port(p).ok_or_else(bad)?),
                None => (authority, default_port),
            }
        };
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::from([127, 0, 0, 1])
        } else {
            host.parse().map_err(|_| bad())?
        };
        if !ip.is_loopback() {
            return Err(bad());
        }
        Ok(Target {
            tls,
            addr: SocketAddr::new(ip, port),
            path: path.to_string(),
        })
    }
}

/// A port as URLs write it: 1 to 5 digits, no sign, no leading zero.
fn port(text: &str) -> Option<u16> {
    let digits = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    digits.then(|| text.parse().ok()).flatten()
}

/// Probes `url` within `timeout`: `Ok` on a 200 answer.
pub fn check(url: &str, timeout: Duration) -> Result<(), HealthError> {
    let target = Target::parse(url)?;
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(&target.addr, timeout)
        .map_err(|e| HealthError::Connect(target.addr, e.kind()))?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: varco-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.addr
    );
    let mut head = Vec::with_capacity(256);
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            HealthError::Timeout(timeout)
        }
        k => HealthError::Connect(target.addr, k),
    };
    let set_deadline = |s: &TcpStream| -> Result<(), HealthError> {
        let d = left();
        if d.is_zero() {
            return Err(HealthError::Timeout(timeout));
        }
        s.set_read_timeout(Some(d)).map_err(io)?;
        s.set_write_timeout(Some(d)).map_err(io)
    };
    set_deadline(&stream)?;
    // The whole exchange (a TLS handshake trickled a byte at a time included) ends at the
    // deadline: a watchdog closes the socket then.
    let watchdog = stream.try_clone().map_err(io)?;
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let _ = watchdog.shutdown(std::net::Shutdown::Both);
    });
    let sock = stream.try_clone().map_err(io)?;
    let renew = || set_deadline(&sock);
    if target.tls {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HealthError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| HealthError::Tls(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        tls.write_all(request.as_bytes()).map_err(io)?;
        read_head(&mut tls, &mut head, renew, timeout)?;
    } else {
        let mut s = stream;
        s.write_all(request.as_bytes()).map_err(io)?;
        read_head(&mut s, &mut head, renew, timeout)?;
    }
    if Instant::now() >= deadline {
        return Err(HealthError::Timeout(timeout));
    }
    match status(&head) {
        Some(200) => Ok(()),
        Some(code) => Err(HealthError::Status(code)),
        None => Err(HealthError::NotHttp),
    }
}

/// Reads until the status line is complete (at most 4 KiB), renewing the deadline per read.
fn read_head(
    r: &mut impl std::io::Read,
    head: &mut Vec<u8>,
    mut renew: impl FnMut() -> Result<(), HealthError>,
    timeout: Duration,
) -> Result<(), HealthError> {
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < 4096 {
        renew()?;
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HealthError::Timeout(timeout));
            }
            Err(e) => return Err(HealthError::Tls(e.to_string().chars().take(200).collect())),
        }
    }
    Ok(())
}

/// The status code of an `HTTP/1.x NNN ...` line.
fn status(head: &[u8]) -> Option<u16> {
    if !head.contains(&b'\n') {
        return None;
    }
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok())?
}

/// Accepts any server certificate (loopback probe only; see the module documentation).
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_probed() {
        assert_eq!(
            Target::parse("https://127.0.0.1:8443/_varco/healthz").unwrap(),
            Target {
                tls: true,
                addr: "127.0.0.1:8443".parse().unwrap(),
                path: "/_varco/healthz".into()
            }
        );
        assert_eq!(
            Target::parse("http://localhost:9090").unwrap().path,
            "/".to_string()
        );
        assert_eq!(
            Target::parse("http://[::1]:9090/readyz").unwrap().addr,
            "[::1]:9090".parse().unwrap()
        );
        for bad in [
            "ftp://127.0.0.1/",
            "https://10.0.0.1/_varco/healthz",
            "https://example.org/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:+8080/",
            "http://127.0.0.1:08080/",
            "http://127.0.0.1:/",
            "http://[::1/",
            "http://127.0.0.1/a b",
            "http://127.0.0.1/a\r\nX: y",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.1 200\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 20\r\n"), None);
        assert_eq!(status(b""), None);
        assert_eq!(status(b"HTTP/1.1 200 OK and no end of line"), None);
    }
}
