//! Who the user is: the [`Identity`] value the gateway builds at login and tells the
//! backend, with its assurance [`Level`], authentication [`Method`], roles, and the
//! [`FiscalCode`] type.

pub mod fiscal_code;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use fiscal_code::{Date, FiscalCode, FiscalCodeError, Sex};

/// SPID/CIE assurance level, ordered Legacy < L1 < L2 < L3. `Legacy` is the legacy INPS
/// PIN's level: below every SPID level, so a route must opt in to accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    Legacy,
    SpidL1,
    SpidL2,
    SpidL3,
}

impl Level {
    /// The `AuthnContextClassRef` / `acr` URI.
    pub fn uri(self) -> &'static str {
        match self {
            Level::Legacy => LEGACY_ACR,
            Level::SpidL1 => "https://www.spid.gov.it/SpidL1",
            Level::SpidL2 => "https://www.spid.gov.it/SpidL2",
            Level::SpidL3 => "https://www.spid.gov.it/SpidL3",
        }
    }

    /// Only the three SPID URIs are levels (the old `urn:oasis:...:SpidL1` form is not);
    /// an IdP can never assert `Legacy`.
    pub fn from_uri(uri: &str) -> Option<Level> {
        match uri {
            "https://www.spid.gov.it/SpidL1" => Some(Level::SpidL1),
            "https://www.spid.gov.it/SpidL2" => Some(Level::SpidL2),
            "https://www.spid.gov.it/SpidL3" => Some(Level::SpidL3),
            _ => None,
        }
    }
}

/// The `acr` of a legacy PIN login: not a SPID level.
pub const LEGACY_ACR: &str = "urn:varco:acr:legacy-pin";

impl std::str::FromStr for Level {
    type Err = ();

    /// `Legacy`, `SpidL1`, `SpidL2`, `SpidL3` (as in configuration and login URLs).
    fn from_str(s: &str) -> Result<Level, ()> {
        match s {
            "Legacy" => Ok(Level::Legacy),
            "SpidL1" => Ok(Level::SpidL1),
            "SpidL2" => Ok(Level::SpidL2),
            "SpidL3" => Ok(Level::SpidL3),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How the user authenticated (the `amr` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Spid,
    Cie,
    Cns,
    Oidc,
    Pin,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Spid => "spid",
            Method::Cie => "cie",
            Method::Cns => "cns",
            Method::Oidc => "oidc",
            Method::Pin => "pin",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name from the role directory (e.g. `operatore`, `volontario`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Role(pub String);

/// An authenticated user, as kept in the session and told to the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: FiscalCode,
    pub given_name: String,
    pub family_name: String,
    pub level: Level,
    pub method: Method,
    /// The IdP's entity id or the OP's issuer (or the CA for CNS).
    pub idp: String,
    pub roles: Vec<Role>,
    /// The patronato (organization id) the roles belong to, from the role directory:
    /// delegations are from a client to a patronato.
    #[serde(default)]
    pub patronato: Option<String>,
    /// Seconds since the Unix epoch.
    pub auth_time: u64,
    /// Further attributes the IdP released (name → value).
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_only_spid_uris_parse() {
        assert!(Level::SpidL1 < Level::SpidL2 && Level::SpidL2 < Level::SpidL3);
        for l in [Level::SpidL1, Level::SpidL2, Level::SpidL3] {
            assert_eq!(Level::from_uri(l.uri()), Some(l));
        }
        assert_eq!(
            Level::from_uri("urn:oasis:names:tc:SAML:2.0:ac:classes:SpidL1"),
            None
        );
    }
}
