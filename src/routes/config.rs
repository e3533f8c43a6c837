//! `[[route]]`: host and path prefix, upstream, protection, level, policy.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact host (`app.example.it`), a wildcard for one label (`*.example.it`), or `*`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Path prefix matched on whole segments: `/app` matches `/app` and `/app/x`, not `/apple`.
    pub path: String,
    pub upstream: String,
    /// Must be said explicitly: a route without login.
    pub public: Option<bool>,
    /// Overrides `server.max_body_bytes` for this route.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Also send plain identity headers (`X-Varco-Fiscal-Code`, ...) for backends that
    /// cannot verify the signed header. Only on protected routes.
    #[serde(default)]
    pub identity_headers: bool,
    /// The least SPID level a session must have here (`SpidL1`..`SpidL3`); a browser
    /// with a lower one is sent to log in again at this level (step-up).
    #[serde(default)]
    pub min_level: Option<crate::identity::Level>,
    /// Authorization on a protected route: methods, level, roles, per-role rules,
    /// delegation (see `policy`).
    #[serde(default)]
    pub policy: Option<crate::policy::PolicyConfig>,
    /// CNS login on the spot: a request here without a session that carries a client
    /// certificate (TLS, or the ingress's `cns.header`) is logged in with the card, no
    /// chooser. Needs `[cns]`.
    #[serde(default)]
    pub cns_login: bool,
    /// What the identity header is bound to here (default `assertion.binding`):
    /// `request` or `session` (docs/backend-verification.md).
    #[serde(default)]
    pub header_binding: Option<crate::assertion::HeaderBinding>,
    /// With session binding: also for unsafe methods (POST, PUT, PATCH, DELETE...), which
    /// otherwise keep a request-bound header.
    #[serde(default)]
    pub session_binding_unsafe_methods: bool,
}

fn default_host() -> String {
    "*".into()
}

/// Problems of `[[route]]` alone (each route, and duplicates), each with its key.
/// Whether a route's upstream exists and what its policy needs from other sections are
/// `Config::validate`'s.
pub fn validate(
    routes: &[RouteConfig],
    reserved_prefix: &str,
    bad: &mut impl FnMut(String, String),
) {
    if routes.is_empty() {
        bad("route".into(), "at least one route is needed".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if r.identity_headers && r.public == Some(true) {
            bad(
                format!("route[{i}].identity_headers"),
                "only protected routes have an identity to send".into(),
            );
        }
        if let Some(p) = &r.policy {
            if r.public == Some(true) {
                bad(
                    format!("route[{i}].policy"),
                    "a public route has no user to authorize".into(),
                );
            }
            if r.min_level.is_some() && p.min_level.is_some() {
                bad(
                    format!("route[{i}].min_level"),
                    "give the level once, in route.policy.min_level".into(),
                );
            }
            if let Err((k, m)) = p.compile() {
                bad(format!("route[{i}].policy.{k}"), m);
            }
        }
        if (r.header_binding.is_some() || r.session_binding_unsafe_methods)
            && r.public == Some(true)
        {
            bad(
                format!("route[{i}].header_binding"),
                "a public route sends no identity header".into(),
            );
        }
        if r.min_level.is_some() && r.public == Some(true) {
            bad(
                format!("route[{i}].min_level"),
                "a public route has no login to require a level of".into(),
            );
        }
        if let Err(e) = super::check_route_path(&r.path) {
            bad(format!("route[{i}].path"), e);
        } else if r.path.starts_with(reserved_prefix.trim_end_matches('/')) {
            bad(
                format!("route[{i}].path"),
                format!("is inside the reserved prefix `{reserved_prefix}`"),
            );
        }
        if let Err(e) = super::check_host_pattern(&r.host) {
            bad(format!("route[{i}].host"), e);
        }
        if r.public.is_none() {
            bad(
                format!("route[{i}].public"),
                "must be said explicitly: `public = true` (no login) or `public = false`".into(),
            );
        }
        if !seen.insert((r.host.to_ascii_lowercase(), r.path.clone())) {
            bad(
                format!("route[{i}]"),
                format!("duplicates host `{}` path `{}`", r.host, r.path),
            );
        }
    }
}
