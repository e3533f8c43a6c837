//! The legacy verifier: is this the PIN of this fiscal code, and when was it issued? An
//! HTTP endpoint of the legacy backend, or (tests, demo) a file of argon2id hashes. The
//! PIN goes only into the verifier request body or the hash check; never into an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Holder, Pin};
use crate::identity::{Date, FiscalCode};

/// The verifier could not answer: the login is refused with 503, never allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the legacy PIN verifier is unavailable")]
pub struct VerifierDown;

pub struct FileEntry {
    hash: String,
    holder: Holder,
}

pub enum Verifier {
    Http { url: String, ca: Option<PathBuf> },
    File(Arc<HashMap<String, FileEntry>>),
}

#[derive(Deserialize)]
struct HttpAnswer {
    valid: bool,
    #[serde(default)]
    issued: Option<Date>,
    #[serde(default)]
    date_of_birth: Option<Date>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    family_name: Option<String>,
}

/// Parses `fiscal_code,issued,date_of_birth,argon2id hash` (the hash last: its PHC form
/// has commas; `date_of_birth` may be empty; `#` comments, optional header line). Errors
/// name the line, never a hash.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<(String, String, Holder)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("fiscal_code,") {
            continue;
        }
        let bad = |what: &str| format!("{name}:{}: {what}", i + 1);
        let cols: Vec<&str> = line.splitn(4, ',').map(str::trim).collect();
        if cols.len() != 4 {
            return Err(bad("expected fiscal_code,issued,date_of_birth,hash"));
        }
        let cf = FiscalCode::parse(cols[0]).map_err(|_| bad("not a fiscal code"))?;
        let issued = Date::parse_iso(cols[1]).ok_or_else(|| bad("issued is not YYYY-MM-DD"))?;
        let date_of_birth = match cols[2] {
            "" => None,
            d => Some(Date::parse_iso(d).ok_or_else(|| bad("date_of_birth is not YYYY-MM-DD"))?),
        };
        if !cols[3].starts_with("$argon2id$") {
            return Err(bad("the hash is not an argon2id PHC string"));
        }
        out.push((
            cf.as_str().to_string(),
            cols[3].to_string(),
            Holder {
                issued,
                date_of_birth,
                given_name: None,
                family_name: None,
            },
        ));
    }
    Ok(out)
}

impl Verifier {
    pub fn load(
        url: Option<&str>,
        file: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Verifier, String> {
        match (url, file) {
            (Some(u), None) => Ok(Verifier::Http {
                url: u.to_string(),
                ca: ca.map(Path::to_path_buf),
            }),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("pin.verifier_file {}: {e}", f.display()))?;
                let rows = parse_file(&f.display().to_string(), &text)?;
                Ok(Verifier::File(Arc::new(
                    rows.into_iter()
                        .map(|(cf, hash, holder)| (cf, FileEntry { hash, holder }))
                        .collect(),
                )))
            }
            _ => Err("pin: exactly one of verifier_url and verifier_file".into()),
        }
    }

    /// `Ok(Some)` for the right PIN, `Ok(None)` for a wrong PIN or an unknown fiscal code.
    pub async fn verify(
        &self,
        subject: &FiscalCode,
        pin: &Pin,
    ) -> Result<Option<Holder>, VerifierDown> {
        match self {
            Verifier::File(table) => {
                let table = table.clone();
                let key = subject.as_str().to_string();
                let pin = pin.clone();
                super::argon2_job(move || {
                    // An unknown code costs a hash too: timing does not tell who has a PIN.
                    match table.get(&key) {
                        Some(e) => {
                            super::verify_secret(pin.expose(), &e.hash).then(|| e.holder.clone())
                        }
                        None => {
                            let _ = super::verify_secret(pin.expose(), super::DUMMY_HASH);
                            None
                        }
                    }
                })
                .await
                .ok_or(VerifierDown)
            }
            Verifier::Http { url, ca } => {
                let body = serde_json::json!({
                    "fiscal_code": subject.as_str(),
                    "pin": pin.expose(),
                });
                let answer = crate::assertion::fetch::post_json(
                    url,
                    ca.as_deref(),
                    bytes::Bytes::from(body.to_string()),
                    64 * 1024,
                    Duration::from_secs(5),
                )
                .await;
                match answer {
                    Ok((200, body)) => {
                        let a: HttpAnswer = serde_json::from_slice(&body).map_err(|_| {
                            tracing::error!("legacy PIN verifier: unreadable answer");
                            VerifierDown
                        })?;
                        match (a.valid, a.issued) {
                            (false, _) => Ok(None),
                            (true, Some(issued)) => Ok(Some(Holder {
                                issued,
                                date_of_birth: a.date_of_birth,
                                given_name: a.given_name,
                                family_name: a.family_name,
                            })),
                            (true, None) => {
                                tracing::error!(
                                    "legacy PIN verifier: a valid answer without `issued`"
                                );
                                Err(VerifierDown)
                            }
                        }
                    }
                    Ok((404, _)) => Ok(None),
                    Ok((status, _)) => {
                        tracing::error!(status, "legacy PIN verifier answered an error");
                        Err(VerifierDown)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "legacy PIN verifier unreachable");
                        Err(VerifierDown)
                    }
                }
            }
        }
    }
}
