//! The exception registry: which fiscal codes are in the categories a fiscal code cannot
//! show (no Italian identity document, guardianship). A CSV file reloaded when it changes,
//! or an HTTP JSON endpoint; cached like the role directory. A registry that cannot
//! answer refuses the PIN login with 503 (never treats the user as an exception).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use moka::sync::Cache;
use serde::Deserialize;

use super::Category;
use crate::identity::{Date, FiscalCode};
use crate::policy::directory::{CsvError, FileSource};

/// `[pin.registry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// CSV `fiscal_code,category[,valid_to]` (`category`: `no_italian_document`,
    /// `guardianship`; `valid_to` `YYYY-MM-DD`, empty = open-ended).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `GET <url with {fiscal_code}>` → JSON `["guardianship", ...]`; 404 = none.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

/// The registry could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the PIN exception registry is unavailable")]
pub struct RegistryDown;

type Table = HashMap<String, Vec<(Category, Option<Date>)>>;

pub fn parse_csv(file: &str, text: &str) -> Result<Table, CsvError> {
    let mut out: Table = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("fiscal_code,") {
            continue;
        }
        let err = |reason| CsvError {
            file: file.to_string(),
            line: i + 1,
            reason,
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(2..=3).contains(&cols.len()) {
            return Err(err("expected fiscal_code,category[,valid_to]"));
        }
        let cf = FiscalCode::parse(cols[0]).map_err(|_| err("not a fiscal code"))?;
        let cat: Category = cols[1].parse().map_err(|_| err("unknown category"))?;
        if cat == Category::Minor {
            return Err(err("minors come from the fiscal code, not the registry"));
        }
        let to = match cols.get(2) {
            None | Some(&"") => None,
            Some(d) => Some(Date::parse_iso(d).ok_or_else(|| err("valid_to is not YYYY-MM-DD"))?),
        };
        out.entry(cf.as_str().to_string())
            .or_default()
            .push((cat, to));
    }
    Ok(out)
}

enum Source {
    File(FileSource<Table>),
    Http { url: String, ca: Option<PathBuf> },
}

pub struct Registry {
    source: Source,
    cache: Cache<String, Vec<(Category, Option<Date>)>>,
}

impl Registry {
    pub fn load(cfg: &RegistryConfig) -> Result<Registry, String> {
        let source = match (&cfg.file, &cfg.url) {
            (Some(f), None) => Source::File(FileSource::load(f.clone(), parse_csv)?),
            (None, Some(u)) => Source::Http {
                url: u.clone(),
                ca: cfg.ca.clone(),
            },
            _ => return Err("pin.registry: exactly one of file and url".into()),
        };
        Ok(Registry {
            source,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.cache_ttl)
                .build(),
        })
    }

    pub fn reload_files(&self) {
        if let Source::File(f) = &self.source {
            match f.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(source = "pin_registry", "PIN exception registry reloaded");
                    self.cache.invalidate_all();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(source = "pin_registry", error = %e, "PIN exception registry not reloaded: keeping the previous table")
                }
            }
        }
    }

    /// The registered categories of `subject` in force on `today`.
    pub async fn categories(
        &self,
        subject: &FiscalCode,
        today: Date,
    ) -> Result<Vec<Category>, RegistryDown> {
        let key = subject.as_str().to_string();
        let entries = match self.cache.get(&key) {
            Some(e) => e,
            None => {
                let e = match &self.source {
                    Source::File(f) => f.current().get(&key).cloned().unwrap_or_default(),
                    Source::Http { url, ca } => {
                        let url = url.replace("{fiscal_code}", &key);
                        match crate::assertion::fetch::get_with(
                            &url,
                            ca.as_deref(),
                            "application/json",
                            64 * 1024,
                        )
                        .await
                        {
                            Ok(body) => {
                                let names: Vec<String> =
                                    serde_json::from_slice(&body).map_err(|_| RegistryDown)?;
                                names
                                    .iter()
                                    .filter_map(|n| n.parse::<Category>().ok())
                                    .filter(|c| *c != Category::Minor)
                                    .map(|c| (c, None))
                                    .collect()
                            }
                            Err(crate::assertion::fetch::FetchError::Status(404)) => Vec::new(),
                            Err(e) => {
                                tracing::error!(source = "pin_registry", error = %e, "PIN exception registry unavailable");
                                return Err(RegistryDown);
                            }
                        }
                    }
                };
                self.cache.insert(key, e.clone());
                e
            }
        };
        let mut out: Vec<Category> = entries
            .iter()
            .filter(|(_, to)| to.is_none_or(|t| today <= t))
            .map(|(c, _)| *c)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}
