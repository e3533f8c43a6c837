//! Per-route authorization (issue 5, spec "Patronato roles"): which login methods, which
//! level, which roles with which HTTP methods on which paths, and whether a delegation
//! (delega) from the client (assistito) to the user's patronato must exist on the request
//! date. [`decide`] is a pure function: the gateway gathers the facts and the lookups,
//! `decide` says allow, step up, deny (with the reason), or "a source is down" (deny, 503).
//!
//! Case: allow rules match path literals exactly; deny rules match them ignoring ASCII
//! case, so a case-insensitive backend cannot be reached around a denial (`/DOMANDE`).

pub mod directory;
pub mod form;
pub mod pattern;

use http::Method as HttpMethod;
use serde::Deserialize;

use crate::identity::{Date, FiscalCode, Identity, Level, Method};
pub use pattern::{Pattern, PatternError};

/// The role of users without one in the directory: citizens acting for themselves.
pub const CITIZEN: &str = "cittadino";

/// `[route.policy]` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Accepted login methods (`spid`, `cie`, `cns`, `oidc`, `pin`); default all but `pin`.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Accepted identity providers: SAML IdP entity ids and OpenID Provider issuers, as
    /// the signed header's `idp` names them; empty: any provider of an accepted method.
    #[serde(default)]
    pub idps: Vec<String>,
    /// The least level; a browser below it logs in again at this level.
    #[serde(default)]
    pub min_level: Option<Level>,
    /// Roles allowed on the route (`operatore`, `volontario`, `cittadino`, ...); empty: any
    /// logged-in user.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Per-role HTTP method and path rules, first match decides; a role with rules may do
    /// only what one of them allows.
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
    /// Where the client's fiscal code is, and who needs a delegation to act for them.
    #[serde(default)]
    pub delegation: Option<DelegationConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub role: String,
    pub effect: Effect,
    /// HTTP methods (`GET`, `POST`...); empty: any.
    #[serde(default)]
    pub http_methods: Vec<String>,
    /// Path patterns (`/fascicolo/**`); empty: any path of the route.
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    /// A path pattern with `{assistito}` ...
    #[serde(default)]
    pub path: Option<String>,
    /// ... or a query parameter ...
    #[serde(default)]
    pub query: Option<String>,
    /// ... or a request header carrying the client's fiscal code.
    #[serde(default)]
    pub header: Option<String>,
    /// Roles that need a valid delegation (default: `volontario`).
    #[serde(default = "default_delegated_roles")]
    pub required_for: Vec<String>,
    /// Roles that may only reach their own file (the `assistito` must be the subject).
    #[serde(default = "default_self_roles")]
    pub self_only: Vec<String>,
}

fn default_delegated_roles() -> Vec<String> {
    vec!["volontario".into()]
}
fn default_self_roles() -> Vec<String> {
    vec![CITIZEN.into()]
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct RoleRule {
    pub role: String,
    pub effect: Effect,
    pub http_methods: Vec<HttpMethod>,
    pub paths: Vec<Pattern>,
}

#[derive(Debug, Clone)]
pub enum AssistitoSource {
    Path(Pattern),
    Query(String),
    Header(http::HeaderName),
}

#[derive(Debug, Clone)]
pub struct Delegation {
    pub source: AssistitoSource,
    pub required_for: Vec<String>,
    pub self_only: Vec<String>,
}

/// A route's compiled policy.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    pub methods: Vec<Method>,
    pub idps: Vec<String>,
    pub min_level: Option<Level>,
    pub roles: Vec<String>,
    pub rules: Vec<RoleRule>,
    pub delegation: Option<Delegation>,
}

impl PolicyConfig {
    /// Whether the policy needs roles or delegations from a `[directory]`.
    pub fn needs_directory(&self) -> bool {
        self.delegation
            .as_ref()
            .is_some_and(|d| !d.required_for.is_empty())
            || self.rule.iter().any(|r| r.role != CITIZEN)
            || self.roles.iter().any(|r| r != CITIZEN)
    }

    /// Compiles the configuration; errors name the key under `route[N].policy`.
    pub fn compile(&self) -> Result<RoutePolicy, (String, String)> {
        let mut rules = Vec::new();
        for (i, r) in self.rule.iter().enumerate() {
            let mut http_methods = Vec::new();
            for m in &r.http_methods {
                let m =
                    HttpMethod::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        (
                            format!("rule[{i}].http_methods"),
                            format!("`{m}` is not a method"),
                        )
                    })?;
                http_methods.push(m);
            }
            let mut paths = Vec::new();
            for p in &r.paths {
                paths.push(
                    Pattern::parse(p).map_err(|e| (format!("rule[{i}].paths"), e.to_string()))?,
                );
            }
            rules.push(RoleRule {
                role: r.role.clone(),
                effect: r.effect,
                http_methods,
                paths,
            });
        }
        let delegation = match &self.delegation {
            None => None,
            Some(d) => {
                let source = match (&d.path, &d.query, &d.header) {
                    (Some(p), None, None) => {
                        let pat = Pattern::parse(p)
                            .map_err(|e| ("delegation.path".to_string(), e.to_string()))?;
                        if !p.contains("{assistito}") {
                            return Err((
                                "delegation.path".into(),
                                "must capture `{assistito}`".into(),
                            ));
                        }
                        AssistitoSource::Path(pat)
                    }
                    (None, Some(q), None) if param_key(q).is_empty() => {
                        return Err((
                            "delegation.query".into(),
                            "a parameter name with letters or digits".into(),
                        ));
                    }
                    (None, Some(q), None) => AssistitoSource::Query(q.clone()),
                    (None, None, Some(h)) => AssistitoSource::Header(
                        http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(
                            |_| {
                                (
                                    "delegation.header".to_string(),
                                    "not a header name".to_string(),
                                )
                            },
                        )?,
                    ),
                    _ => {
                        return Err((
                            "delegation".into(),
                            "exactly one of `path`, `query`, `header`".into(),
                        ));
                    }
                };
                Some(Delegation {
                    source,
                    required_for: d.required_for.clone(),
                    self_only: d.self_only.clone(),
                })
            }
        };
        Ok(RoutePolicy {
            methods: self.methods.clone(),
            idps: self.idps.clone(),
            min_level: self.min_level,
            roles: self.roles.clone(),
            rules,
            delegation,
        })
    }
}

/// What the request is, besides who makes it.
pub struct RequestFacts<'a> {
    pub method: &'a HttpMethod,
    /// The normalized path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The parameter names of the request's form body (urlencoded, multipart or a JSON
    /// object's keys), when the gateway read it: on a route whose client is named by a
    /// query parameter, PHP's `$_REQUEST`, Rails' `params` and Spring read the body's too.
    pub form_fields: &'a [String],
    pub today: Date,
}

/// A delegation from a client to a patronato, as its system of record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRecord {
    pub valid_from: Date,
    pub valid_to: Option<Date>,
    pub revoked: bool,
}

/// A source that could not answer (fail closed: 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDown(pub &'static str);

/// What `decide` may look up.
pub trait Lookups {
    /// The delegation from `assistito` to `patronato`, if any.
    fn delegation(
        &self,
        patronato: &str,
        assistito: &FiscalCode,
    ) -> Result<Option<DelegationRecord>, SourceDown>;
}

/// Why a request is denied. `Display` names what is missing, never other people's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("login method `{0}` is not accepted here")]
    LoginMethod(&'static str),
    #[error("logins through this identity provider are not accepted here")]
    IdentityProvider,
    #[error("your role does not give access here")]
    Role,
    #[error("role `{role}` may not use {method} here")]
    RoleRule { role: String, method: String },
    #[error("the client's fiscal code is missing or not valid")]
    MissingAssistito,
    /// The request names the client more than once (a repeated parameter or header, the
    /// parameter in the body too, another spelling): backends would read another one.
    #[error("the request names the client more than once")]
    AmbiguousAssistito,
    /// A form body on a route that must read it could not be read as every backend
    /// would read it (compressed, malformed, an unreadable Content-Type).
    #[error("the request body cannot be read to check it")]
    UninspectableBody,
    /// `_method` (Laravel, Symfony, Rack) on a route with per-method role rules: the
    /// backend would run another method than the one the rules were checked for.
    #[error("the request overrides its method")]
    MethodOverride,
    #[error("only your own file can be opened here")]
    NotOwnFile,
    #[error("no delegation from this client to your patronato")]
    NoDelegation,
    #[error("the delegation from this client is not valid on this date")]
    DelegationNotValid,
    #[error("the delegation from this client was revoked")]
    DelegationRevoked,
    #[error("no patronato is recorded for your role")]
    NoPatronato,
}

impl Denial {
    /// Stable code for JSON bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::LoginMethod(_) => "login_method_not_accepted",
            Denial::IdentityProvider => "identity_provider_not_accepted",
            Denial::Role => "role_not_allowed",
            Denial::RoleRule { .. } => "operation_not_allowed_for_role",
            Denial::MissingAssistito => "client_fiscal_code_missing",
            Denial::AmbiguousAssistito => "client_named_more_than_once",
            Denial::UninspectableBody => "body_not_inspectable",
            Denial::MethodOverride => "method_override_refused",
            Denial::NotOwnFile => "not_own_file",
            Denial::NoDelegation => "delegation_missing",
            Denial::DelegationNotValid => "delegation_not_in_force",
            Denial::DelegationRevoked => "delegation_revoked",
            Denial::NoPatronato => "patronato_missing",
        }
    }

    /// 400 for a request that is malformed for the route (the client named twice), 403
    /// for every other denial.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Denial::AmbiguousAssistito | Denial::UninspectableBody | Denial::MethodOverride => {
                http::StatusCode::BAD_REQUEST
            }
            _ => http::StatusCode::FORBIDDEN,
        }
    }

    /// What the user is told, Italian then English: what is missing, nothing about others.
    pub fn message(&self) -> (&'static str, &'static str) {
        match self {
            Denial::LoginMethod(_) => (
                "Questo servizio non accetta il metodo di accesso usato: accedi con SPID, CIE o CNS.",
                "This service does not accept the login method you used: log in with SPID, CIE or CNS.",
            ),
            Denial::IdentityProvider => (
                "Questo servizio non accetta accessi tramite il gestore dell'identità usato: esci e accedi con un altro.",
                "This service does not accept logins through the identity provider you used: log out and log in with another.",
            ),
            Denial::Role => (
                "Il tuo ruolo non consente l'accesso a questo servizio.",
                "Your role does not give access to this service.",
            ),
            Denial::RoleRule { .. } => (
                "Il tuo ruolo non consente questa operazione (ad esempio l'invio di domande).",
                "Your role does not allow this operation (for example submitting applications).",
            ),
            Denial::MissingAssistito => (
                "Manca il codice fiscale dell'assistito, o non è valido.",
                "The client's fiscal code is missing or not valid.",
            ),
            Denial::AmbiguousAssistito => (
                "La richiesta indica più di un assistito: indicane uno solo.",
                "The request names more than one client: name exactly one.",
            ),
            Denial::UninspectableBody => (
                "Il contenuto della richiesta non è leggibile: invialo come modulo non compresso.",
                "The request body cannot be read: send it as an uncompressed form.",
            ),
            Denial::MethodOverride => (
                "La richiesta cambia il proprio metodo (_method): non è consentito qui.",
                "The request overrides its method (_method): not allowed here.",
            ),
            Denial::NotOwnFile => (
                "Puoi consultare solo la tua posizione.",
                "You can only open your own file.",
            ),
            Denial::NoDelegation => (
                "Manca una delega di questo assistito al tuo patronato.",
                "There is no delegation from this client to your patronato.",
            ),
            Denial::DelegationNotValid => (
                "La delega di questo assistito non è valida in questa data.",
                "The delegation from this client is not valid on this date.",
            ),
            Denial::DelegationRevoked => (
                "La delega di questo assistito è stata revocata.",
                "The delegation from this client was revoked.",
            ),
            Denial::NoPatronato => (
                "Il tuo ruolo non è associato a un patronato.",
                "Your role is not associated with a patronato.",
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Log in again at this level (browser) or 401 naming it (API).
    StepUp(Level),
    Deny(Denial),
    /// A source is down: 503, never allow.
    Unavailable(&'static str),
}

fn roles_of(identity: &Identity) -> Vec<&str> {
    if identity.roles.is_empty() {
        vec![CITIZEN]
    } else {
        identity.roles.iter().map(|r| r.0.as_str()).collect()
    }
}

fn rule_applies(rule: &RoleRule, facts: &RequestFacts<'_>) -> bool {
    // Methods compare ignoring case (`post` is POST to many backends); the gateway also
    // refuses non-canonical standard methods before policy.
    let method_ok = rule.http_methods.is_empty()
        || rule
            .http_methods
            .iter()
            .any(|m| m.as_str().eq_ignore_ascii_case(facts.method.as_str()));
    // Deny rules fold case so that case cannot dodge them; allow rules do not.
    let fold = rule.effect == Effect::Deny;
    let path_ok = rule.paths.is_empty() || rule.paths.iter().any(|p| p.matches(facts.path, fold));
    method_ok && path_ok
}

/// Why the request's client cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unnamed {
    Missing,
    /// Named more than once, or in a spelling only some backends read as the name.
    Ambiguous,
}

/// A parameter name reduced to what the most lenient backends compare: cut at a NUL
/// (PHP), an array suffix dropped when its `[` is closed (`cf[]`, `cf[0]`: PHP, Rails),
/// then only the ASCII letters and digits, lower case (ASP.NET ignores case; PHP trims
/// leading spaces and reads `.`, space and an unclosed `[` as `_`). Two names with the same
/// key may be one parameter to some backend; it may match more than any one backend does,
/// which only ever refuses more.
fn param_key(name: &str) -> String {
    let name = name.split('\0').next().unwrap_or("");
    let base = match name.find('[') {
        Some(i) if name[i..].contains(']') => &name[..i],
        _ => name,
    };
    base.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

/// A parameter name as PHP files it (Laravel and Symfony read `_method` from PHP's
/// arrays): cut at NUL, leading spaces trimmed, `.`, space and an unclosed `[` read as `_`,
/// a closed array suffix dropped; ASCII case ignored besides.
fn php_name(name: &str) -> String {
    let name = name
        .split('\0')
        .next()
        .unwrap_or("")
        .trim_start_matches(' ');
    let base = match name.find('[') {
        Some(i) if name[i..].contains(']') => &name[..i],
        _ => name,
    };
    base.chars()
        .map(|c| match c {
            '.' | ' ' | '[' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The query's pairs, split on `&` and on `;` (which older CGI and Python parsers also
/// take as a separator).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split(['&', ';']).filter(|p| !p.is_empty()).map(|p| {
        let mut pair = form_urlencoded::parse(p.as_bytes());
        pair.next()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .unwrap_or_default()
    })
}

/// The client's fiscal code named by the request, as configured: named exactly once, in
/// the configured spelling, and nowhere else a backend could read it.
fn assistito(d: &Delegation, facts: &RequestFacts<'_>) -> Result<FiscalCode, Unnamed> {
    let raw: String = match &d.source {
        AssistitoSource::Path(p) => p
            .capture(facts.path, "assistito", true)
            .ok_or(Unnamed::Missing)?
            .to_string(),
        AssistitoSource::Query(name) => {
            let key = param_key(name);
            let mut found: Vec<(String, String)> = facts
                .query
                .map(|q| {
                    query_pairs(q)
                        .filter(|(k, _)| param_key(k) == key)
                        .collect()
                })
                .unwrap_or_default();
            let in_body = facts
                .form_fields
                .iter()
                .filter(|f| param_key(f) == key)
                .count();
            match (found.len() + in_body, found.pop()) {
                (0, _) => return Err(Unnamed::Missing),
                (1, Some((k, v))) if k == *name => v,
                _ => return Err(Unnamed::Ambiguous),
            }
        }
        AssistitoSource::Header(h) => {
            // `X_Assistito` is `X-Assistito` to CGI, WSGI and IIS (names are lower case).
            let dash = |b: u8| if b == b'_' { b'-' } else { b };
            let same = |k: &str| {
                k.len() == h.as_str().len()
                    && k.bytes()
                        .zip(h.as_str().bytes())
                        .all(|(a, b)| dash(a) == dash(b))
            };
            let mut values = Vec::new();
            let mut other_spelling = false;
            for (k, v) in facts.headers {
                if same(k.as_str()) {
                    other_spelling |= k != h;
                    values.push(v);
                }
            }
            match values.as_slice() {
                [] => return Err(Unnamed::Missing),
                [v] if !other_spelling => v.to_str().map_err(|_| Unnamed::Missing)?.to_string(),
                _ => return Err(Unnamed::Ambiguous),
            }
        }
    };
    FiscalCode::parse(&raw).map_err(|_| Unnamed::Missing)
}

impl RoutePolicy {
    /// Whether the client is named by a query parameter: then a form body must be read
    /// (see [`form`]) before [`decide`], for the names it carries.
    pub fn reads_form_bodies(&self) -> bool {
        self.delegation
            .as_ref()
            .is_some_and(|d| matches!(d.source, AssistitoSource::Query(_)))
            || self.has_method_rules()
    }

    /// Whether a role rule names HTTP methods: then `_method` overrides are refused.
    fn has_method_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.http_methods.is_empty())
    }
}

/// The delegation `decide` will ask about for this request, if any: the gateway fetches
/// it (asynchronously, through the caches) before calling `decide` with [`Prefetched`].
pub fn delegation_needed(
    policy: &RoutePolicy,
    identity: &Identity,
    facts: &RequestFacts<'_>,
) -> Option<(String, FiscalCode)> {
    let d = policy.delegation.as_ref()?;
    let needs = roles_of(identity)
        .iter()
        .any(|r| d.required_for.iter().any(|x| x == r));
    if !needs {
        return None;
    }
    Some((identity.patronato.clone()?, assistito(d, facts).ok()?))
}

/// Lookups answered from what the gateway fetched before deciding.
pub struct Prefetched {
    pub key: Option<(String, FiscalCode)>,
    pub answer: Result<Option<DelegationRecord>, SourceDown>,
}

impl Lookups for Prefetched {
    fn delegation(
        &self,
        patronato: &str,
        assistito: &FiscalCode,
    ) -> Result<Option<DelegationRecord>, SourceDown> {
        match &self.key {
            Some((p, a)) if p == patronato && a == assistito => self.answer.clone(),
            // Not fetched: fail closed.
            _ => Err(SourceDown("delegations")),
        }
    }
}

/// Decides one role's access; `Ok(())` allows.
fn decide_role(
    policy: &RoutePolicy,
    role: &str,
    identity: &Identity,
    facts: &RequestFacts<'_>,
    lookups: &dyn Lookups,
) -> Result<(), Decision> {
    if !policy.roles.is_empty() && !policy.roles.iter().any(|r| r == role) {
        return Err(Decision::Deny(Denial::Role));
    }
    let mine: Vec<&RoleRule> = policy.rules.iter().filter(|r| r.role == role).collect();
    if !mine.is_empty() {
        let verdict = mine
            .iter()
            .find(|r| rule_applies(r, facts))
            .map(|r| r.effect);
        if verdict != Some(Effect::Allow) {
            return Err(Decision::Deny(Denial::RoleRule {
                role: role.to_string(),
                method: facts.method.to_string(),
            }));
        }
    }
    let Some(d) = &policy.delegation else {
        return Ok(());
    };
    let self_only = d.self_only.iter().any(|r| r == role);
    let needs_delega = d.required_for.iter().any(|r| r == role);
    if !self_only && !needs_delega {
        return Ok(());
    }
    let client = assistito(d, facts).map_err(|_| Decision::Deny(Denial::MissingAssistito))?;
    if self_only {
        return if client == identity.subject {
            Ok(())
        } else {
            Err(Decision::Deny(Denial::NotOwnFile))
        };
    }
    let patronato = identity
        .patronato
        .as_deref()
        .ok_or(Decision::Deny(Denial::NoPatronato))?;
    let record = lookups
        .delegation(patronato, &client)
        .map_err(|SourceDown(s)| Decision::Unavailable(s))?
        .ok_or(Decision::Deny(Denial::NoDelegation))?;
    if record.revoked {
        return Err(Decision::Deny(Denial::DelegationRevoked));
    }
    let in_force =
        record.valid_from <= facts.today && record.valid_to.is_none_or(|to| facts.today <= to);
    if !in_force {
        return Err(Decision::Deny(Denial::DelegationNotValid));
    }
    Ok(())
}

/// The decision for `identity` making the request described by `facts` on a route with
/// `policy`. Order: login method, identity provider, level (step-up), then per role: role allowed, role
/// rules, own-file or delegation. Several roles: allowed if one of them is.
pub fn decide(
    policy: &RoutePolicy,
    identity: &Identity,
    facts: &RequestFacts<'_>,
    lookups: &dyn Lookups,
) -> Decision {
    let accepted = if policy.methods.is_empty() {
        identity.method != Method::Pin
    } else {
        policy.methods.contains(&identity.method)
    };
    if !accepted {
        return Decision::Deny(Denial::LoginMethod(identity.method.as_str()));
    }
    if !policy.idps.is_empty() && !policy.idps.contains(&identity.idp) {
        return Decision::Deny(Denial::IdentityProvider);
    }
    if let Some(min) = policy.min_level
        && identity.level < min
    {
        return Decision::StepUp(min);
    }
    // A method override would run another method than the one the rules are checked for.
    if policy.has_method_rules() {
        let is_override = |n: &str| php_name(n) == "_method";
        let in_query = facts
            .query
            .is_some_and(|q| query_pairs(q).any(|(k, _)| is_override(&k)));
        if in_query || facts.form_fields.iter().any(|f| is_override(f)) {
            return Decision::Deny(Denial::MethodOverride);
        }
    }
    // A request that names the client twice is malformed on this route, whoever sends
    // it: refused before any role could let it through to a backend that reads the other.
    if let Some(d) = &policy.delegation
        && assistito(d, facts) == Err(Unnamed::Ambiguous)
    {
        return Decision::Deny(Denial::AmbiguousAssistito);
    }
    let mut first_refusal = None;
    for role in roles_of(identity) {
        match decide_role(policy, role, identity, facts, lookups) {
            Ok(()) => return Decision::Allow,
            // A source down decides at once: never fall through to another role.
            Err(d @ Decision::Unavailable(_)) => return d,
            Err(d) => {
                first_refusal.get_or_insert(d);
            }
        }
    }
    first_refusal.unwrap_or(Decision::Deny(Denial::Role))
}

#[cfg(test)]
mod tests;
