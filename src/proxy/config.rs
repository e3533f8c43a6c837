//! `[upstream.<name>]`: where a route forwards to, with its timeouts, pool and trust.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`, optionally with a base path.
    pub url: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Overrides `server.request_timeout` for this upstream.
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// PEM bundle trusted for an `https` upstream instead of the public web roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Open connections to this upstream per worker, at most; further requests wait for one
    /// (within the request timeout).
    #[serde(default = "default_upstream_connections")]
    pub max_connections: usize,
    /// Send the client's `Host` to the upstream instead of the upstream's own authority
    /// (the original host is always in `X-Forwarded-Host` and `Forwarded`).
    #[serde(default)]
    pub preserve_host: bool,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_upstream_connections() -> usize {
    1024
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}

impl UpstreamConfig {
    /// Problems of `[upstream.<name>]`, each with its key.
    pub fn validate(&self, name: &str, bad: &mut impl FnMut(String, String)) {
        let u = self;
        let key = format!("upstream.{name}.url");
        match u.url.parse::<http::Uri>() {
            Ok(uri) => {
                let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
                if !scheme_ok || uri.host().is_none() {
                    bad(key, "must be an absolute http:// or https:// URL".into());
                } else if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                    bad(key, "must not carry credentials (user:password@)".into());
                } else if uri.query().is_some() {
                    bad(key, "must not carry a query".into());
                }
            }
            Err(e) => bad(key, format!("not a URL: {e}")),
        }
        if u.max_connections == 0 {
            bad(
                format!("upstream.{name}.max_connections"),
                "must be greater than zero".into(),
            );
        }
        if u.connect_timeout.is_zero() {
            bad(
                format!("upstream.{name}.connect_timeout"),
                "must be greater than zero".into(),
            );
        }
        if let Some(ca) = &u.ca
            && !ca.is_file()
        {
            bad(
                format!("upstream.{name}.ca"),
                format!("file `{}` does not exist", ca.display()),
            );
        }
    }

    /// The request timeout for this upstream: its own, or `server.request_timeout`.
    pub fn request_timeout_or(&self, server_default: Duration) -> Duration {
        self.request_timeout.unwrap_or(server_default)
    }
}
