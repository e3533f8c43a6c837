//! Claims to an [`Identity`]: which claim holds the fiscal code (the SPID/CIE
//! `https://attributes.eid.gov.it/fiscal_number`, `TINIT-` form accepted), the names and,
//! for staff providers, the roles; UserInfo merged with the ID token only when it speaks of
//! the same `sub` (Core §5.3.2).

use serde_json::{Map, Value};

use crate::identity::{FiscalCode, Identity, Level, Method, Role};

/// The fiscal code's claim in the SPID and CIE profiles.
pub const EID_FISCAL_NUMBER: &str = "https://attributes.eid.gov.it/fiscal_number";

/// Which claims hold what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    pub fiscal_code: String,
    pub given_name: String,
    pub family_name: String,
    /// A claim with the user's roles (an array of strings, or one space-separated
    /// string); `None` takes roles from the directory only.
    pub roles: Option<String>,
}

impl ClaimMap {
    /// SPID and CIE over OpenID Connect.
    pub fn eid() -> ClaimMap {
        ClaimMap {
            fiscal_code: EID_FISCAL_NUMBER.into(),
            given_name: "given_name".into(),
            family_name: "family_name".into(),
            roles: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the claim `{0}` is missing")]
    Missing(String),
    #[error("the claim `{0}` is not a fiscal code")]
    FiscalCode(String),
    #[error("the claim `{0}` has the wrong type")]
    Type(String),
    #[error("the UserInfo response is about another subject")]
    SubjectMismatch,
}

/// The ID token's claims with the UserInfo response's added (UserInfo wins for the
/// attributes; `iss`, `aud` and the like stay the token's). Refused when UserInfo's `sub`
/// is not the token's.
pub fn merge_userinfo(
    id_token: &Map<String, Value>,
    userinfo: &Map<String, Value>,
) -> Result<Map<String, Value>, ClaimError> {
    if userinfo.get("sub") != id_token.get("sub") || userinfo.get("sub").is_none() {
        return Err(ClaimError::SubjectMismatch);
    }
    let mut out = id_token.clone();
    for (k, v) in userinfo {
        if !matches!(
            k.as_str(),
            "iss" | "aud" | "azp" | "exp" | "iat" | "nbf" | "nonce" | "acr" | "sid" | "jti"
        ) {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

fn text<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ClaimError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ClaimError::Type(name.into())),
    }
}

/// The login's identity: `level` from the validated `acr`, `method` (`spid`, `cie`, or
/// `oidc` for generic providers), `idp` the provider's issuer, `auth_time` the token's or
/// `now`.
pub fn identity(
    claims: &Map<String, Value>,
    map: &ClaimMap,
    level: Level,
    method: Method,
    idp: &str,
    auth_time: u64,
) -> Result<Identity, ClaimError> {
    let code = text(claims, &map.fiscal_code)?
        .ok_or_else(|| ClaimError::Missing(map.fiscal_code.clone()))?;
    let subject =
        FiscalCode::parse(code).map_err(|_| ClaimError::FiscalCode(map.fiscal_code.clone()))?;
    let roles = match map.roles.as_deref().map(|name| (name, claims.get(name))) {
        None | Some((_, None | Some(Value::Null))) => Vec::new(),
        Some((_, Some(Value::String(s)))) => {
            s.split_ascii_whitespace().map(|r| Role(r.into())).collect()
        }
        Some((name, Some(Value::Array(items)))) => items
            .iter()
            .map(|v| v.as_str().map(|r| Role(r.into())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ClaimError::Type(name.into()))?,
        Some((name, Some(_))) => return Err(ClaimError::Type(name.into())),
    };
    Ok(Identity {
        subject,
        given_name: text(claims, &map.given_name)?.unwrap_or("").to_string(),
        family_name: text(claims, &map.family_name)?.unwrap_or("").to_string(),
        level,
        method,
        idp: idp.into(),
        roles,
        patronato: None,
        auth_time,
        extra: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_eid_claims_become_the_identity() {
        let c = map(json!({
            "sub": "p1",
            EID_FISCAL_NUMBER: "TINIT-RSSMRA80A01H501U",
            "given_name": "Mario",
            "family_name": "Rossi",
        }));
        let id = identity(
            &c,
            &ClaimMap::eid(),
            Level::SpidL2,
            Method::Spid,
            "https://op/",
            7,
        )
        .unwrap();
        assert_eq!(id.subject.as_str(), "RSSMRA80A01H501U");
        assert_eq!(
            (id.given_name.as_str(), id.family_name.as_str()),
            ("Mario", "Rossi")
        );
        assert_eq!(
            (id.level, id.method, id.auth_time),
            (Level::SpidL2, Method::Spid, 7)
        );
        assert!(id.roles.is_empty());
    }

    #[test]
    fn a_missing_or_wrong_fiscal_code_is_refused() {
        let m = ClaimMap::eid();
        let run = |v: Value| identity(&map(v), &m, Level::SpidL2, Method::Cie, "op", 0);
        assert_eq!(
            run(json!({"sub": "p"})),
            Err(ClaimError::Missing(EID_FISCAL_NUMBER.into()))
        );
        assert_eq!(
            run(json!({EID_FISCAL_NUMBER: "RSSMRA80A01H501X"})),
            Err(ClaimError::FiscalCode(EID_FISCAL_NUMBER.into()))
        );
        assert_eq!(
            run(json!({EID_FISCAL_NUMBER: 42})),
            Err(ClaimError::Type(EID_FISCAL_NUMBER.into()))
        );
        assert_eq!(
            run(json!({EID_FISCAL_NUMBER: "RSSMRA80A01H501U", "given_name": ["x"]})),
            Err(ClaimError::Type("given_name".into()))
        );
    }

    #[test]
    fn staff_providers_map_their_own_claims_and_roles() {
        let m = ClaimMap {
            fiscal_code: "cf".into(),
            given_name: "name".into(),
            family_name: "surname".into(),
            roles: Some("groups".into()),
        };
        let run = |v: Value| identity(&map(v), &m, Level::SpidL2, Method::Oidc, "kc", 0);
        let id =
            run(json!({"cf": "RSSMRA80A01H501U", "groups": ["operatore", "volontario"]})).unwrap();
        assert_eq!(
            id.roles,
            vec![Role("operatore".into()), Role("volontario".into())]
        );
        let id = run(json!({"cf": "RSSMRA80A01H501U", "groups": "operatore volontario"})).unwrap();
        assert_eq!(id.roles.len(), 2);
        assert_eq!(
            run(json!({"cf": "RSSMRA80A01H501U", "groups": [1]})),
            Err(ClaimError::Type("groups".into()))
        );
    }

    #[test]
    fn userinfo_counts_only_for_the_same_subject() {
        let token = map(json!({"sub": "p1", "iss": "https://op/", "acr": "a"}));
        let info = map(
            json!({"sub": "p1", EID_FISCAL_NUMBER: "RSSMRA80A01H501U", "iss": "https://evil/"}),
        );
        let merged = merge_userinfo(&token, &info).unwrap();
        assert_eq!(merged["iss"], "https://op/");
        assert_eq!(merged[EID_FISCAL_NUMBER], "RSSMRA80A01H501U");
        let other = map(json!({"sub": "p2", EID_FISCAL_NUMBER: "RSSMRA80A01H501U"}));
        assert_eq!(
            merge_userinfo(&token, &other),
            Err(ClaimError::SubjectMismatch)
        );
        let none = map(json!({EID_FISCAL_NUMBER: "RSSMRA80A01H501U"}));
        assert_eq!(
            merge_userinfo(&token, &none),
            Err(ClaimError::SubjectMismatch)
        );
    }
}
