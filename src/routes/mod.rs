//! The route table: host + path prefix → route (upstream and policy). Lookups take the
//! already-normalized path (see [`normalize`]); hosts are compared lower-case without port.
//! Host specificity wins first (exact host, then `*.domain`, then `*`), then the longest
//! path prefix, matched on whole segments.

pub mod config;
pub mod normalize;

use std::sync::Arc;

use crate::identity::Level;
use crate::policy::RoutePolicy;
use crate::proxy::{Upstream, Upstreams};
use crate::telemetry::{Metrics, RouteMetrics};

pub use config::RouteConfig;
pub use normalize::{PathError, normalize_path};

/// One configured route, compiled once at start-up: everything the request path needs to
/// know about it (matching, protection, upstream, limits, metrics) and nothing read back
/// from the configuration per request.
pub struct Route {
    /// Position in the configuration.
    pub index: usize,
    /// `route[N]`, used as the metrics label.
    pub id: Arc<str>,
    pub host: String,
    pub prefix: String,
    pub upstream: Arc<Upstream>,
    pub public: bool,
    pub max_body_bytes: u64,
    pub identity_headers: bool,
    /// `min_level` set on the route itself (the policy may demand one too).
    pub min_level: Option<Level>,
    /// `cns_login`: a CNS card logs in on the spot.
    pub cns_login: bool,
    /// `route.header_binding` (`None`: `assertion.binding`).
    pub header_binding: Option<crate::assertion::HeaderBinding>,
    pub session_binding_unsafe_methods: bool,
    /// The compiled `policy`, if the route has one.
    pub policy: Option<RoutePolicy>,
    pub metrics: RouteMetrics,
}

impl Route {
    /// The level a login for this route must reach: the route's own or its policy's,
    /// whichever is higher (one login, not a login and then a step-up).
    pub fn login_level(&self) -> Option<Level> {
        self.min_level
            .max(self.policy.as_ref().and_then(|p| p.min_level))
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("id", &self.id)
            .field("host", &self.host)
            .field("prefix", &self.prefix)
            .field("upstream", &self.upstream.name)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A route that cannot be compiled (`Config::validate` reports these first, with keys).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("route[{index}]: no upstream named {upstream:?}")]
    UnknownUpstream { index: usize, upstream: String },
    #[error("route[{index}].policy.{key}: {message}")]
    Policy {
        index: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.it` stored as `.example.it`.
    Suffix(String),
    Any,
}

impl HostPattern {
    fn parse(s: &str) -> HostPattern {
        let s = s.to_ascii_lowercase();
        if s == "*" {
            HostPattern::Any
        } else if let Some(rest) = s.strip_prefix('*') {
            HostPattern::Suffix(rest.to_string())
        } else {
            HostPattern::Exact(s)
        }
    }

    /// 0 = no match; higher = more specific.
    fn rank(&self, host: &str) -> usize {
        match self {
            HostPattern::Exact(h) if h == host => 3,
            HostPattern::Suffix(sfx) if host.len() > sfx.len() && host.ends_with(sfx.as_str()) => 2,
            HostPattern::Any => 1,
            _ => 0,
        }
    }
}

/// Checks a configured path prefix: absolute and already normal.
pub fn check_route_path(path: &str) -> Result<(), String> {
    match normalize_path(path) {
        Ok(n) if n == path => Ok(()),
        Ok(n) => Err(format!("is not in normal form; write `{n}`")),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks a configured host pattern.
pub fn check_host_pattern(host: &str) -> Result<(), String> {
    let body = host.strip_prefix("*.").unwrap_or(host);
    if host == "*" {
        return Ok(());
    }
    if body.is_empty()
        || body.contains('*')
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("must be `*`, `*.domain` or a host name (no port)".into());
    }
    Ok(())
}

/// The compiled route table.
#[derive(Debug)]
pub struct RouteTable {
    /// Sorted by (host rank is computed per lookup) path length, longest first.
    routes: Vec<(HostPattern, Arc<Route>)>,
    /// `server.case_insensitive_paths`.
    fold_case: bool,
}

/// Whether `path` is under `prefix` as the router reads it: whole segments, a segment
/// also ending at a path parameter (`;`), ASCII case folded when `fold_case`.
pub fn prefix_matches(prefix: &str, path: &str, fold_case: bool) -> bool {
    if prefix == "/" {
        return true;
    }
    // A segment ends at `/` or at a path parameter (`/admin;x/users` is under `/admin`,
    // as Java servlet containers read it).
    let p = prefix.trim_end_matches('/');
    let head_matches = |n: usize| {
        let head = &path.as_bytes()[..n];
        if fold_case {
            head.eq_ignore_ascii_case(p.as_bytes())
        } else {
            head == p.as_bytes()
        }
    };
    (path.len() == p.len() && head_matches(p.len()))
        || (path.len() > p.len()
            && head_matches(p.len())
            && matches!(path.as_bytes()[p.len()], b'/' | b';'))
}

impl RouteTable {
    /// The table of `routes`, each compiled once: its upstream resolved in `upstreams`, its
    /// policy compiled, its metrics registered in `metrics`. `max_body_bytes` is
    /// `server.max_body_bytes`, `fold_case` `server.case_insensitive_paths`. Fails closed: a
    /// route that does not compile stops the start.
    pub fn new(
        routes: &[RouteConfig],
        upstreams: &Upstreams,
        metrics: &Metrics,
        max_body_bytes: u64,
        fold_case: bool,
    ) -> Result<RouteTable, SetupError> {
        let mut table = Vec::with_capacity(routes.len());
        for (index, r) in routes.iter().enumerate() {
            let upstream =
                upstreams
                    .get(&r.upstream)
                    .cloned()
                    .ok_or_else(|| SetupError::UnknownUpstream {
                        index,
                        upstream: r.upstream.clone(),
                    })?;
            let policy = match &r.policy {
                Some(p) => Some(p.compile().map_err(|(key, message)| SetupError::Policy {
                    index,
                    key,
                    message,
                })?),
                None => None,
            };
            let id: Arc<str> = format!("route[{index}]").into();
            let route = Route {
                index,
                metrics: metrics.route(&id),
                id,
                host: r.host.to_ascii_lowercase(),
                prefix: r.path.clone(),
                upstream,
                public: r.public.unwrap_or(false),
                max_body_bytes: r.max_body_bytes.unwrap_or(max_body_bytes),
                identity_headers: r.identity_headers,
                min_level: r.min_level,
                cns_login: r.cns_login,
                header_binding: r.header_binding,
                session_binding_unsafe_methods: r.session_binding_unsafe_methods,
                policy,
            };
            table.push((HostPattern::parse(&r.host), Arc::new(route)));
        }
        table.sort_by_key(|r| std::cmp::Reverse(r.1.prefix.len()));
        Ok(RouteTable {
            routes: table,
            fold_case,
        })
    }

    /// The route for `host` (lower-case, no port) and a normalized `path`, if any.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let mut best: Option<(usize, &Arc<Route>)> = None;
        for (pattern, route) in &self.routes {
            let rank = pattern.rank(host);
            if rank == 0 || best.is_some_and(|(r, _)| r >= rank) {
                continue;
            }
            if prefix_matches(&route.prefix, path, self.fold_case) {
                // Routes are sorted longest prefix first: the first match at a rank is the
                // longest at that rank; only a more specific host can still win.
                best = Some((rank, route));
                if rank == 3 {
                    break;
                }
            }
        }
        best.map(|(_, r)| r)
    }
}

/// Validates a `Host` (or `:authority`) value strictly — a DNS name (letters, digits, `-`,
/// `.`, `_`), an IPv4 address or a bracketed IPv6 literal, then an optional numeric port;
/// no userinfo, no spaces — and returns it lower-cased without the port. A backend that
/// parses a looser `Host` (e.g. `a:1@b`) differently from the router cannot be steered.
pub fn parse_host(value: &str) -> Option<String> {
    if value.is_empty() || value.len() > 255 {
        return None;
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let end = rest.find(']')?;
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&value[..end + 2], port)
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if !host.starts_with('[')
        && (host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
    {
        return None;
    }
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// Lower-cases a `Host` value and removes the port (IPv6 literals keep their brackets).
pub fn host_without_port(host: &str) -> String {
    let h = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str, &str)]) -> RouteTable {
        let mut text = String::from(
            "[[server.listener]]\naddress = \"127.0.0.1:0\"\n[upstream.a]\nurl = \"http://127.0.0.1:1\"\n[upstream.b]\nurl = \"http://127.0.0.1:2\"\n[upstream.c]\nurl = \"http://127.0.0.1:3\"\n",
        );
        for (host, path, up) in routes {
            text.push_str(&format!(
                "[[route]]\nhost = \"{host}\"\npath = \"{path}\"\nupstream = \"{up}\"\npublic = true\n"
            ));
        }
        {
            let cfg = crate::config::Config::from_toml("t", &text).unwrap();
            let upstreams = Upstreams::new(&cfg.upstream, cfg.server.request_timeout).unwrap();
            RouteTable::new(
                &cfg.route,
                &upstreams,
                &Metrics::new(),
                cfg.server.max_body_bytes,
                cfg.server.case_insensitive_paths,
            )
            .unwrap()
        }
    }

    /// A validated table of public routes on `/a`, `/b`, `/c`, changed by `edit` before it
    /// is compiled (as protected ones, with levels and policies).
    fn compile(edit: impl FnOnce(&mut [RouteConfig])) -> Result<RouteTable, SetupError> {
        let mut cfg = crate::config::Config::from_toml(
            "t",
            "[[server.listener]]\naddress = \"127.0.0.1:0\"\n[upstream.a]\nurl = \"http://127.0.0.1:1\"\n\
             [[route]]\npath = \"/a\"\nupstream = \"a\"\npublic = true\n\
             [[route]]\npath = \"/b\"\nupstream = \"a\"\npublic = true\n\
             [[route]]\npath = \"/c\"\nupstream = \"a\"\npublic = true\n",
        )
        .unwrap();
        edit(&mut cfg.route);
        let upstreams = Upstreams::new(&cfg.upstream, cfg.server.request_timeout).unwrap();
        RouteTable::new(&cfg.route, &upstreams, &Metrics::new(), 1000, false)
    }

    /// Everything the request path reads of a route is compiled into it once: level,
    /// policy (and the level a login asks for), CNS flag, upstream, body limit, metrics.
    #[test]
    fn a_route_is_compiled_once_with_everything_the_request_path_reads() {
        let t = compile(|r| {
            r[0].public = None;
            r[0].min_level = Some(Level::SpidL2);
            r[0].cns_login = true;
            r[1].public = None;
            r[1].max_body_bytes = Some(7);
            r[1].policy = Some(crate::policy::PolicyConfig {
                min_level: Some(Level::SpidL3),
                ..Default::default()
            });
        })
        .unwrap();
        let a = t.lookup("h", "/a/x").unwrap();
        assert_eq!(
            (
                a.min_level,
                a.login_level(),
                a.cns_login,
                a.policy.is_none()
            ),
            (Some(Level::SpidL2), Some(Level::SpidL2), true, true)
        );
        assert_eq!(
            (&*a.id, &*a.upstream.name, a.max_body_bytes),
            ("route[0]", "a", 1000)
        );
        let b = t.lookup("h", "/b").unwrap();
        assert_eq!((b.min_level, b.login_level()), (None, Some(Level::SpidL3)));
        assert_eq!((b.max_body_bytes, &*b.metrics.label.0), (7, "route[1]"));
        let c = t.lookup("h", "/c").unwrap();
        assert!(c.public && c.login_level().is_none());
    }

    /// A route naming no configured upstream, or with a policy that does not compile,
    /// stops the start (fail closed) with the route's key.
    #[test]
    fn a_route_that_does_not_compile_stops_the_start() {
        let e = compile(|r| r[0].upstream = "nope".into()).unwrap_err();
        assert_eq!(e.to_string(), "route[0]: no upstream named \"nope\"");
        let e = compile(|r| {
            r[2].policy = Some(crate::policy::PolicyConfig {
                rule: vec![crate::policy::RuleConfig {
                    role: "operatore".into(),
                    effect: crate::policy::Effect::Allow,
                    http_methods: vec!["NOT A METHOD".into()],
                    paths: Vec::new(),
                }],
                ..Default::default()
            })
        });
        let e = e.unwrap_err().to_string();
        assert_eq!(
            e,
            "route[2].policy.rule[0].http_methods: `NOT A METHOD` is not a method"
        );
    }

    #[test]
    fn case_insensitive_paths_keep_a_case_variant_under_its_route() {
        let mut t = table(&[("*", "/", "a"), ("*", "/domande", "b")]);
        assert_eq!(up(&t, "h", "/DOMANDE/nuova"), Some("a".into()));
        t.fold_case = true;
        for p in ["/DOMANDE/nuova", "/Domande", "/domande;x/y", "/dOmAnDe/"] {
            assert_eq!(up(&t, "h", p), Some("b".into()), "{p}");
        }
        assert_eq!(up(&t, "h", "/domandex"), Some("a".into()));
    }

    fn up(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        t.lookup(host, path).map(|r| r.upstream.name.to_string())
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table(&[
            ("*", "/", "a"),
            ("*", "/admin", "b"),
            ("*", "/admin/x/", "c"),
        ]);
        assert_eq!(up(&t, "h", "/"), Some("a".into()));
        assert_eq!(up(&t, "h", "/admin"), Some("b".into()));
        assert_eq!(up(&t, "h", "/admin/"), Some("b".into()));
        assert_eq!(up(&t, "h", "/admin/y"), Some("b".into()));
        assert_eq!(up(&t, "h", "/administrator"), Some("a".into()));
        assert_eq!(up(&t, "h", "/admin/x"), Some("c".into()));
        assert_eq!(up(&t, "h", "/admin/x/1"), Some("c".into()));
        assert_eq!(up(&t, "h", "/admin;x/users"), Some("b".into()));
    }

    #[test]
    fn host_specificity_wins_before_path_length() {
        let t = table(&[
            ("*", "/api/v1", "a"),
            ("*.example.it", "/", "b"),
            ("app.example.it", "/api", "c"),
        ]);
        assert_eq!(up(&t, "app.example.it", "/api/v1"), Some("c".into()));
        assert_eq!(up(&t, "app.example.it", "/other"), Some("b".into()));
        assert_eq!(up(&t, "x.example.it", "/api/v1"), Some("b".into()));
        assert_eq!(up(&t, "example.it", "/api/v1"), Some("a".into()));
        assert_eq!(up(&t, "example.it", "/other"), None);
    }

    #[test]
    fn normalized_dot_segments_cannot_dodge_a_rule() {
        let t = table(&[("*", "/", "a"), ("*", "/admin", "b")]);
        let p = normalize_path("/public/../admin/x").unwrap();
        assert_eq!(up(&t, "h", &p), Some("b".into()));
        let p = normalize_path("//admin").unwrap();
        assert_eq!(up(&t, "h", &p), Some("b".into()));
        let p = normalize_path("/%61dmin").unwrap();
        assert_eq!(up(&t, "h", &p), Some("b".into()));
    }

    #[test]
    fn hosts_are_parsed_strictly() {
        assert_eq!(
            parse_host("App.Example.it:8443").as_deref(),
            Some("app.example.it")
        );
        assert_eq!(parse_host("[::1]:8443").as_deref(), Some("[::1]"));
        assert_eq!(parse_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        for bad in [
            "pub.example.it:1@admin.example.it",
            "x@admin.example.it",
            "a b",
            "a:b",
            "a:",
            "a:123456",
            "[::1",
            "[zz]",
            "",
            "a/b",
            "a\\b",
        ] {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_port_is_removed() {
        assert_eq!(host_without_port("App.Example.it:8443"), "app.example.it");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("example.it."), "example.it");
    }
}
