//! The systems of record the policy consults (spec "Patronato roles"): the role directory
//! (fiscal code → roles with patronato and validity) and the delegations (patronato,
//! client → validity, revoked). Each comes from a CSV file (reloaded when it changes) or
//! an HTTP JSON endpoint, behind moka caches with a TTL and a shorter negative TTL. A
//! source that cannot answer is an error ([`SourceDown`]): the request is refused with
//! 503, never allowed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use moka::sync::Cache;
use serde::Deserialize;

use super::{DelegationRecord, SourceDown};
use crate::identity::{Date, FiscalCode};

/// `[directory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// CSV `fiscal_code,role,patronato,valid_from,valid_to` (dates `YYYY-MM-DD`, `valid_to`
    /// may be empty; lines starting with `#` are comments), or a `.toml` file of
    /// `[[grant]]` tables with the same keys.
    #[serde(default)]
    pub roles_file: Option<PathBuf>,
    /// `GET <url with {fiscal_code}>` → JSON `[{"role", "patronato", "valid_from", "valid_to"}]`.
    #[serde(default)]
    pub roles_url: Option<String>,
    /// CSV `patronato,assistito,valid_from,valid_to,revoked` (`revoked` = `true`/`false`).
    #[serde(default)]
    pub delegations_file: Option<PathBuf>,
    /// `GET <url with {patronato} and {assistito}>` → JSON `{"valid_from", "valid_to",
    /// "revoked"}`, or 404 when there is none.
    #[serde(default)]
    pub delegations_url: Option<String>,
    /// CA for https source URLs (default: the public web roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long "none" answers are cached.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// How often files are checked for changes.
    #[serde(default = "default_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl DirectoryConfig {
    /// Problems of `[directory]`, each with its key.
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let d = self;
        for (k, v) in [("cache_ttl", d.cache_ttl), ("negative_ttl", d.negative_ttl)] {
            if v > Duration::from_secs(86_400) {
                bad(format!("directory.{k}"), "at most 1d".into());
            }
        }
        for (k, p) in [
            ("roles_file", &d.roles_file),
            ("delegations_file", &d.delegations_file),
        ] {
            if let Some(p) = p
                && !p.is_file()
            {
                bad(
                    format!("directory.{k}"),
                    format!("{} is not a file", p.display()),
                );
            }
        }
        if d.roles_file.is_some() && d.roles_url.is_some() {
            bad(
                "directory.roles_url".into(),
                "roles_file or roles_url, not both".into(),
            );
        }
        if d.delegations_file.is_some() && d.delegations_url.is_some() {
            bad(
                "directory.delegations_url".into(),
                "delegations_file or delegations_url, not both".into(),
            );
        }
    }
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_reload() -> Duration {
    Duration::from_secs(5)
}

/// One role assignment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoleGrant {
    pub role: String,
    pub patronato: String,
    #[serde(deserialize_with = "de_date")]
    pub valid_from: Date,
    #[serde(default, deserialize_with = "de_opt_date")]
    pub valid_to: Option<Date>,
}

#[derive(Debug, Deserialize)]
struct DelegationJson {
    #[serde(deserialize_with = "de_date")]
    valid_from: Date,
    #[serde(default, deserialize_with = "de_opt_date")]
    valid_to: Option<Date>,
    #[serde(default)]
    revoked: bool,
}

/// `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse_iso(s)
}

fn de_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
    let s = String::deserialize(d)?;
    parse_date(&s).ok_or_else(|| serde::de::Error::custom("not a YYYY-MM-DD date"))
}

fn de_opt_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => parse_date(t)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("not a YYYY-MM-DD date")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct CsvError {
    pub file: String,
    pub line: usize,
    pub reason: &'static str,
}

type RoleTable = HashMap<String, Vec<RoleGrant>>;
type DelegationTable = HashMap<(String, String), DelegationRecord>;

fn csv_rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.split(',').map(str::trim).collect()))
}

/// Parses the roles CSV. A header line (`fiscal_code,...`) is skipped.
pub fn parse_roles_csv(file: &str, text: &str) -> Result<RoleTable, CsvError> {
    let mut out: RoleTable = HashMap::new();
    for (line, cols) in csv_rows(text) {
        if cols.first() == Some(&"fiscal_code") {
            continue;
        }
        let err = |reason| CsvError {
            file: file.to_string(),
            line,
            reason,
        };
        let [code, role, patronato, from, to] = cols[..] else {
            return Err(err("expected 5 columns"));
        };
        let code = FiscalCode::parse(code).map_err(|_| err("not a valid fiscal code"))?;
        if role.is_empty() || patronato.is_empty() {
            return Err(err("empty role or patronato"));
        }
        let valid_from = parse_date(from).ok_or_else(|| err("valid_from is not YYYY-MM-DD"))?;
        let valid_to = match to {
            "" => None,
            t => Some(parse_date(t).ok_or_else(|| err("valid_to is not YYYY-MM-DD"))?),
        };
        out.entry(code.as_str().to_string())
            .or_default()
            .push(RoleGrant {
                role: role.to_string(),
                patronato: patronato.to_string(),
                valid_from,
                valid_to,
            });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RolesToml {
    #[serde(default)]
    grant: Vec<GrantToml>,
}

#[derive(Deserialize)]
struct GrantToml {
    fiscal_code: String,
    #[serde(flatten)]
    grant: RoleGrant,
}

/// Parses a roles file in TOML: `[[grant]]` tables with `fiscal_code`, `role`,
/// `patronato`, `valid_from`, optional `valid_to`.
pub fn parse_roles_toml(file: &str, text: &str) -> Result<RoleTable, CsvError> {
    let err = |reason| CsvError {
        file: file.to_string(),
        line: 0,
        reason,
    };
    let parsed: RolesToml = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|_| err("not a [[grant]] TOML file (fiscal_code, role, patronato, valid_from)"))?;
    let mut out: RoleTable = HashMap::new();
    for g in parsed.grant {
        let code = FiscalCode::parse(&g.fiscal_code).map_err(|_| err("not a valid fiscal code"))?;
        out.entry(code.as_str().to_string())
            .or_default()
            .push(g.grant);
    }
    Ok(out)
}

/// The roles file's parser by extension: `.toml` or CSV.
pub fn parse_roles_file(file: &str, text: &str) -> Result<RoleTable, CsvError> {
    if file.ends_with(".toml") {
        parse_roles_toml(file, text)
    } else {
        parse_roles_csv(file, text)
    }
}

/// Parses the delegations CSV. A header line (`patronato,...`) is skipped.
pub fn parse_delegations_csv(file: &str, text: &str) -> Result<DelegationTable, CsvError> {
    let mut out = HashMap::new();
    for (line, cols) in csv_rows(text) {
        if cols.first() == Some(&"patronato") {
            continue;
        }
        let err = |reason| CsvError {
            file: file.to_string(),
            line,
            reason,
        };
        let [patronato, client, from, to, revoked] = cols[..] else {
            return Err(err("expected 5 columns"));
        };
        let client = FiscalCode::parse(client).map_err(|_| err("not a valid fiscal code"))?;
        let valid_from = parse_date(from).ok_or_else(|| err("valid_from is not YYYY-MM-DD"))?;
        let valid_to = match to {
            "" => None,
            t => Some(parse_date(t).ok_or_else(|| err("valid_to is not YYYY-MM-DD"))?),
        };
        let revoked = match revoked {
            "true" => true,
            "false" | "" => false,
            _ => return Err(err("revoked is neither true nor false")),
        };
        out.insert(
            (patronato.to_string(), client.as_str().to_string()),
            DelegationRecord {
                valid_from,
                valid_to,
                revoked,
            },
        );
    }
    Ok(out)
}

/// The roles (unique, in order) and the patronato of the first grant, for the session.
pub fn roles_of(grants: &[RoleGrant]) -> (Vec<crate::identity::Role>, Option<String>) {
    let mut roles: Vec<crate::identity::Role> = Vec::new();
    for g in grants {
        if !roles.iter().any(|r| r.0 == g.role) {
            roles.push(crate::identity::Role(g.role.clone()));
        }
    }
    (roles, grants.first().map(|g| g.patronato.clone()))
}

/// A CSV file kept in memory, replaced whole when it changes and parses.
pub(crate) struct FileSource<T> {
    path: PathBuf,
    table: RwLock<Arc<T>>,
    modified: RwLock<Option<SystemTime>>,
    parse: fn(&str, &str) -> Result<T, CsvError>,
}

impl<T> FileSource<T> {
    pub(crate) fn load(
        path: PathBuf,
        parse: fn(&str, &str) -> Result<T, CsvError>,
    ) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table = parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(FileSource {
            path,
            table: RwLock::new(Arc::new(table)),
            modified: RwLock::new(modified),
            parse,
        })
    }

    pub(crate) fn current(&self) -> Arc<T> {
        match self.table.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Reloads when the file's modification time changed; a bad file keeps the old table.
    /// Returns whether a new table was installed.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let last = self.modified.read().map(|g| *g).unwrap_or(None);
        if last == Some(modified) {
            return Ok(false);
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let table =
            (self.parse)(&self.path.display().to_string(), &text).map_err(|e| e.to_string())?;
        if let Ok(mut g) = self.table.write() {
            *g = Arc::new(table);
        }
        if let Ok(mut g) = self.modified.write() {
            *g = Some(modified);
        }
        Ok(true)
    }
}

enum Source<T> {
    File(FileSource<T>),
    Http(String),
    None,
}

/// Roles and delegations, cached.
pub struct Directory {
    cfg: DirectoryConfig,
    roles: Source<RoleTable>,
    delegations: Source<DelegationTable>,
    role_cache: Cache<String, Arc<Vec<RoleGrant>>>,
    role_negative: Cache<String, ()>,
    delegation_cache: Cache<(String, String), Option<DelegationRecord>>,
    delegation_negative: Cache<(String, String), ()>,
    pub metrics: DirectoryMetrics,
}

/// Lookup counters: (hits, misses, errors) by source (`roles`, `delegations`).
#[derive(Default, Clone)]
pub struct DirectoryMetrics {
    pub lookups: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl DirectoryMetrics {
    fn count(&self, source: &str, outcome: &str) {
        self.lookups
            .get_or_create(&vec![
                ("source".into(), source.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }
}

impl Directory {
    /// Loads the configured files (a bad file stops the start, naming the line).
    pub fn load(cfg: &DirectoryConfig, metrics: DirectoryMetrics) -> Result<Directory, String> {
        let roles = match (&cfg.roles_file, &cfg.roles_url) {
            (Some(p), None) => Source::File(FileSource::load(p.clone(), parse_roles_file)?),
            (None, Some(u)) => Source::Http(u.clone()),
            (None, None) => Source::None,
            _ => return Err("directory: roles_file or roles_url, not both".into()),
        };
        let delegations = match (&cfg.delegations_file, &cfg.delegations_url) {
            (Some(p), None) => Source::File(FileSource::load(p.clone(), parse_delegations_csv)?),
            (None, Some(u)) => Source::Http(u.clone()),
            (None, None) => Source::None,
            _ => return Err("directory: delegations_file or delegations_url, not both".into()),
        };
        fn cache<K, V>(ttl: Duration) -> Cache<K, V>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build()
        }
        Ok(Directory {
            cfg: cfg.clone(),
            roles,
            delegations,
            role_cache: cache(cfg.cache_ttl),
            role_negative: cache(cfg.negative_ttl),
            delegation_cache: cache(cfg.cache_ttl),
            delegation_negative: cache(cfg.negative_ttl),
            metrics,
        })
    }

    pub fn has_roles(&self) -> bool {
        !matches!(self.roles, Source::None)
    }

    /// Checks the files for changes (called every `reload_interval`); clears the caches
    /// when a table was replaced.
    pub fn reload_files(&self) {
        let mut changed = false;
        for (name, r) in [
            (
                "roles",
                match &self.roles {
                    Source::File(f) => Some(f.reload_if_changed()),
                    _ => None,
                },
            ),
            (
                "delegations",
                match &self.delegations {
                    Source::File(f) => Some(f.reload_if_changed()),
                    _ => None,
                },
            ),
        ] {
            match r {
                Some(Ok(true)) => {
                    tracing::info!(source = name, "directory file reloaded");
                    changed = true;
                }
                Some(Err(e)) => {
                    tracing::error!(source = name, error = %e, "directory file not reloaded: keeping the previous table")
                }
                _ => {}
            }
        }
        if changed {
            self.role_cache.invalidate_all();
            self.role_negative.invalidate_all();
            self.delegation_cache.invalidate_all();
            self.delegation_negative.invalidate_all();
        }
    }

    pub fn reload_interval(&self) -> Duration {
        self.cfg.reload_interval
    }

    /// The roles of `subject` in force on `today`.
    pub async fn roles(
        &self,
        subject: &FiscalCode,
        today: Date,
    ) -> Result<Vec<RoleGrant>, SourceDown> {
        let key = subject.as_str().to_string();
        let in_force = |grants: &[RoleGrant]| {
            grants
                .iter()
                .filter(|g| g.valid_from <= today && g.valid_to.is_none_or(|t| today <= t))
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some(g) = self.role_cache.get(&key) {
            self.metrics.count("roles", "hit");
            return Ok(in_force(&g));
        }
        if self.role_negative.get(&key).is_some() {
            self.metrics.count("roles", "hit");
            return Ok(Vec::new());
        }
        self.metrics.count("roles", "miss");
        let grants: Vec<RoleGrant> = match &self.roles {
            Source::None => return Ok(Vec::new()),
            Source::File(f) => f.current().get(&key).cloned().unwrap_or_default(),
            Source::Http(url) => {
                let url = url.replace("{fiscal_code}", &key);
                match crate::assertion::fetch::get_with(
                    &url,
                    self.cfg.ca.as_deref(),
                    "application/json",
                    256 * 1024,
                )
                .await
                {
                    Ok(body) => serde_json::from_slice(&body).map_err(|_| {
                        self.metrics.count("roles", "error");
                        SourceDown("roles")
                    })?,
                    Err(crate::assertion::fetch::FetchError::Status(404)) => Vec::new(),
                    Err(e) => {
                        self.metrics.count("roles", "error");
                        tracing::error!(source = "roles", error = %e, "role directory unavailable");
                        return Err(SourceDown("roles"));
                    }
                }
            }
        };
        if grants.is_empty() {
            self.role_negative.insert(key, ());
        } else {
            self.role_cache.insert(key, Arc::new(grants.clone()));
        }
        Ok(in_force(&grants))
    }

    /// The delegation from `client` to `patronato`.
    pub async fn delegation(
        &self,
        patronato: &str,
        client: &FiscalCode,
    ) -> Result<Option<DelegationRecord>, SourceDown> {
        let key = (patronato.to_string(), client.as_str().to_string());
        if let Some(r) = self.delegation_cache.get(&key) {
            self.metrics.count("delegations", "hit");
            return Ok(r);
        }
        if self.delegation_negative.get(&key).is_some() {
            self.metrics.count("delegations", "hit");
            return Ok(None);
        }
        self.metrics.count("delegations", "miss");
        let record = match &self.delegations {
            Source::None => None,
            Source::File(f) => f.current().get(&key).cloned(),
            Source::Http(url) => {
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let url = url
                    .replace("{patronato}", &enc(patronato))
                    .replace("{assistito}", client.as_str());
                match crate::assertion::fetch::get_with(
                    &url,
                    self.cfg.ca.as_deref(),
                    "application/json",
                    64 * 1024,
                )
                .await
                {
                    Ok(body) => {
                        let j: DelegationJson = serde_json::from_slice(&body).map_err(|_| {
                            self.metrics.count("delegations", "error");
                            SourceDown("delegations")
                        })?;
                        Some(DelegationRecord {
                            valid_from: j.valid_from,
                            valid_to: j.valid_to,
                            revoked: j.revoked,
                        })
                    }
                    Err(crate::assertion::fetch::FetchError::Status(404)) => None,
                    Err(e) => {
                        self.metrics.count("delegations", "error");
                        tracing::error!(source = "delegations", error = %e, "delegation source unavailable");
                        return Err(SourceDown("delegations"));
                    }
                }
            }
        };
        match &record {
            None => self.delegation_negative.insert(key, ()),
            Some(_) => self.delegation_cache.insert(key, record.clone()),
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_tables_parse_and_name_the_bad_line() {
        let first15 = "BNCGLI85C52H501";
        let op = format!(
            "{first15}{}",
            crate::identity::fiscal_code::check_character(first15.as_bytes()) as char
        );
        let text = format!(
            "fiscal_code,role,patronato,valid_from,valid_to\n\
             # operators\n\
             {op}, operatore, P1, 2020-01-01,\n\
             {op},volontario,P2,2020-01-01,2021-01-01\n"
        );
        let roles = parse_roles_csv("roles.csv", &text).unwrap();
        let g = &roles[&op];
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].role, "operatore");
        assert_eq!(g[0].valid_to, None);
        let bad =
            parse_roles_csv("r.csv", "BNCGLI85C52H501X,operatore,P1,2020-01-01,\n").unwrap_err();
        assert_eq!((bad.line, bad.reason), (1, "not a valid fiscal code"));
        let bad =
            parse_roles_csv("r.csv", &format!("\n\n{op},operatore,P1,2020-13-01,\n")).unwrap_err();
        assert_eq!(bad.line, 3);
        let d = parse_delegations_csv(
            "d.csv",
            "patronato,assistito,valid_from,valid_to,revoked\nP1,RSSMRA80A01H501U,2025-01-01,,false\n",
        )
        .unwrap();
        assert!(!d[&("P1".to_string(), "RSSMRA80A01H501U".to_string())].revoked);
        assert!(parse_delegations_csv("d.csv", "P1,RSSMRA80A01H501U,2025-01-01,,maybe\n").is_err());
        let toml = format!(
            "[[grant]]\nfiscal_code = \"{op}\"\nrole = \"operatore\"\npatronato = \"P1\"\nvalid_from = \"2020-01-01\"\n\
             [[grant]]\nfiscal_code = \"{op}\"\nrole = \"volontario\"\npatronato = \"P2\"\nvalid_from = \"2020-01-01\"\nvalid_to = \"2021-01-01\"\n"
        );
        let t = parse_roles_file("ruoli.toml", &toml).unwrap();
        assert_eq!(t[&op], roles[&op]);
        assert!(parse_roles_file("ruoli.toml", "[[grant]]\nrole = 1\n").is_err());
    }
}
