//! `[saml]`: the service provider (us) and the IdP federations it trusts.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::authn_request::Profile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    Redirect,
    Post,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// Our entityID (SPID: a URL of the service provider's domain).
    pub entity_id: String,
    /// The public origin browsers reach the gateway at (`https://host[:port]`); the ACS and
    /// SLO URLs are `<base_url><reserved_prefix>saml/acs` and `.../saml/slo`.
    pub base_url: String,
    /// Our signing certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How AuthnRequests travel: `redirect` (default) or `post`.
    #[serde(default = "default_binding")]
    pub binding: Binding,
    /// Allowed clock difference with IdPs.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Tie each login to the browser that started it, with a `SameSite=None; Secure`
    /// cookie scoped to the SAML endpoints (as Shibboleth's relay-state cookie): an answer
    /// an attacker obtained for their own login, posted from the victim's browser, does not
    /// log the victim in as the attacker (login CSRF). On by default; `false` is an
    /// explicit opt-out (the IdP's cross-site POST then depends on no cookie at all).
    #[serde(default = "default_browser_binding")]
    pub browser_binding: bool,
    /// Logins a client address may start per `login_rate_window` (each one signs an
    /// AuthnRequest and keeps pending state until `session.login_timeout`).
    #[serde(default = "default_max_logins")]
    pub max_logins_per_address: u32,
    #[serde(default = "default_login_window", with = "humantime_serde")]
    pub login_rate_window: std::time::Duration,
    /// The service name shown in AttributeConsumingService.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    pub organization: Organization,
    pub contact: Contact,
    /// Attribute sets (`AttributeConsumingService`), indexed from 0 in order.
    #[serde(default = "default_attribute_sets")]
    pub attribute_set: Vec<AttributeSet>,
    #[serde(default)]
    pub federation: Vec<FederationConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub name: String,
    pub display_name: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// A public administration (`spid:Public`, with `ipa_code`) or a private SP.
    pub public: bool,
    #[serde(default)]
    pub ipa_code: Option<String>,
    #[serde(default)]
    pub vat_number: Option<String>,
    #[serde(default)]
    pub fiscal_code: Option<String>,
    pub email: String,
    pub telephone: String,
    /// CIE: the ISTAT code of the municipality of the registered office (e.g. `058091`).
    #[serde(default)]
    pub municipality: Option<String>,
    /// CIE, private service providers: the NACE Rev. 2 code of the main activity
    /// (e.g. `84.11`).
    #[serde(default)]
    pub nace2_code: Option<String>,
    /// SPID, private service providers: who AgID invoices (`[saml.contact.billing]`, the
    /// `fpa:CessionarioCommittente` of the billing contact, Avviso 29).
    #[serde(default)]
    pub billing: Option<Billing>,
}

/// The invoicing data of a private SPID service provider (electronic invoice format:
/// `DatiAnagrafici` and `Sede` of the `CessionarioCommittente`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Billing {
    /// `Denominazione`: the company's name (at most 80 Latin characters).
    pub denomination: String,
    /// `IdFiscaleIVA`: the VAT number with its country prefix (`IT12345678901`) ...
    #[serde(default)]
    pub vat_number: Option<String>,
    /// ... and/or `CodiceFiscale`.
    #[serde(default)]
    pub fiscal_code: Option<String>,
    /// `Sede`: street (`Indirizzo`), number (`NumeroCivico`), postal code (`CAP`, 5
    /// digits), municipality (`Comune`), province (`Provincia`, 2 letters), country
    /// (`Nazione`, 2 letters).
    pub address: String,
    #[serde(default)]
    pub number: Option<String>,
    pub postal_code: String,
    pub municipality: String,
    #[serde(default)]
    pub province: Option<String>,
    #[serde(default = "default_country")]
    pub country: String,
    /// The billing contact's e-mail (default: the contact's).
    #[serde(default)]
    pub email: Option<String>,
}

fn default_country() -> String {
    "IT".into()
}

impl Billing {
    fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let key = |k: &str| format!("saml.contact.billing.{k}");
        let latin = |s: &str, max: usize| {
            !s.is_empty()
                && s.chars().count() <= max
                && s.chars().all(|c| (c as u32) < 256 && !c.is_control())
        };
        if !latin(&self.denomination, 80) {
            bad(key("denomination"), "1 to 80 Latin characters".into());
        }
        if self.vat_number.is_none() && self.fiscal_code.is_none() {
            bad(
                key("vat_number"),
                "`vat_number` (with its country, e.g. IT12345678901) or `fiscal_code`".into(),
            );
        }
        if let Some(v) = &self.vat_number
            && !(v.len() > 2
                && v.len() <= 30
                && v.is_char_boundary(2)
                && v[..2].bytes().all(|b| b.is_ascii_uppercase())
                && v[2..].bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            bad(
                key("vat_number"),
                "the country code then the number, e.g. IT12345678901".into(),
            );
        }
        if let Some(f) = &self.fiscal_code
            && !((11..=16).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            bad(key("fiscal_code"), "11 to 16 letters and digits".into());
        }
        if !latin(&self.address, 60) {
            bad(key("address"), "1 to 60 Latin characters".into());
        }
        if !latin(&self.municipality, 60) {
            bad(key("municipality"), "1 to 60 Latin characters".into());
        }
        if !(self.postal_code.len() == 5 && self.postal_code.bytes().all(|b| b.is_ascii_digit())) {
            bad(key("postal_code"), "5 digits".into());
        }
        if let Some(p) = &self.province
            && !(p.len() == 2 && p.bytes().all(|b| b.is_ascii_uppercase()))
        {
            bad(key("province"), "2 capital letters, e.g. RM".into());
        }
        if !(self.country.len() == 2 && self.country.bytes().all(|b| b.is_ascii_uppercase())) {
            bad(key("country"), "2 capital letters, e.g. IT".into());
        }
        if let Some(n) = &self.number
            && !latin(n, 8)
        {
            bad(key("number"), "1 to 8 characters".into());
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSet {
    pub attributes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Spid,
    Cie,
    Generic,
}

impl From<ProfileName> for Profile {
    fn from(p: ProfileName) -> Profile {
        match p {
            ProfileName::Spid => Profile::Spid,
            ProfileName::Cie => Profile::Cie,
            ProfileName::Generic => Profile::Generic,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Short name used in URLs (`spid`, `cie`).
    pub name: String,
    pub profile: ProfileName,
    /// Local metadata files (ops-pinned).
    #[serde(default)]
    pub metadata_files: Vec<PathBuf>,
    /// A metadata URL fetched on a schedule (e.g. the AgID registry).
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// Certificates (PEM files) one of which must sign what `metadata_url` serves.
    #[serde(default)]
    pub metadata_signing_certs: Vec<PathBuf>,
    /// CA for an https `metadata_url` (default: the public web roots).
    #[serde(default)]
    pub metadata_ca: Option<PathBuf>,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Where the last good copy of `metadata_url` is kept (served when a fetch fails).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Minimum RSA key size of IdP signing certificates (default 2048).
    #[serde(default = "default_min_rsa_bits")]
    pub min_rsa_bits: usize,
    /// Index of the attribute set requested from this federation's IdPs.
    #[serde(default)]
    pub attribute_set: u16,
}

fn default_browser_binding() -> bool {
    true
}

fn default_binding() -> Binding {
    Binding::Redirect
}
fn default_skew() -> Duration {
    Duration::from_secs(5)
}
fn default_max_logins() -> u32 {
    30
}

fn default_login_window() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn default_service_name() -> String {
    "Servizi online".into()
}
fn default_refresh() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_min_rsa_bits() -> usize {
    2048
}
fn default_attribute_sets() -> Vec<AttributeSet> {
    vec![AttributeSet {
        attributes: [
            "spidCode",
            "name",
            "familyName",
            "fiscalNumber",
            "dateOfBirth",
        ]
        .map(String::from)
        .to_vec(),
    }]
}

impl SamlConfig {
    /// Problems with keys under `saml.`; see `Config::validate`.
    pub fn validate(&self, mut bad: impl FnMut(String, String)) {
        if self.max_logins_per_address == 0
            || self.login_rate_window.is_zero()
            || self.login_rate_window > std::time::Duration::from_secs(86_400)
        {
            bad(
                "saml.max_logins_per_address".into(),
                "a limit above zero per login_rate_window (1s to 1d)".into(),
            );
        }
        if !(self.entity_id.starts_with("https://") || self.entity_id.starts_with("http://")) {
            bad("saml.entity_id".into(), "must be a URL".into());
        }
        let base = self.base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://"))
            || base.ends_with('/')
            || base[base.find("://").map_or(0, |i| i + 3)..].contains('/')
        {
            bad(
                "saml.base_url".into(),
                "must be an origin like `https://gateway.example.it` (no path, no trailing /)"
                    .into(),
            );
        }
        for (k, p) in [("cert", &self.cert), ("key", &self.key)] {
            if !p.is_file() {
                bad(
                    format!("saml.{k}"),
                    format!("{} is not a file", p.display()),
                );
            }
        }
        if self.contact.public && self.contact.ipa_code.is_none() {
            bad(
                "saml.contact.ipa_code".into(),
                "a public service provider needs its IPA code".into(),
            );
        }
        if !self.contact.public
            && self.contact.vat_number.is_none()
            && self.contact.fiscal_code.is_none()
        {
            bad(
                "saml.contact".into(),
                "a private service provider needs `vat_number` or `fiscal_code`".into(),
            );
        }
        if self
            .federation
            .iter()
            .any(|f| f.profile == ProfileName::Cie)
        {
            // The CIE metadata rules (saml-schema-metadata-sp-cie, and AgID's checks).
            if self.contact.municipality.is_none() {
                bad(
                    "saml.contact.municipality".into(),
                    "a CIE service provider needs the ISTAT code of its registered office's municipality"
                        .into(),
                );
            }
            if !self.contact.public {
                for (key, value) in [
                    ("vat_number", &self.contact.vat_number),
                    ("fiscal_code", &self.contact.fiscal_code),
                    ("nace2_code", &self.contact.nace2_code),
                ] {
                    if value.is_none() {
                        bad(
                            format!("saml.contact.{key}"),
                            "a private CIE service provider needs it".into(),
                        );
                    }
                }
            }
        }
        if !self.contact.public
            && self
                .federation
                .iter()
                .any(|f| f.profile == ProfileName::Spid)
        {
            match &self.contact.billing {
                Some(b) => b.validate(&mut bad),
                None => bad(
                    "saml.contact.billing".into(),
                    "a private SPID service provider needs its invoicing data (denomination, vat_number or fiscal_code, address, postal_code, municipality, country)"
                        .into(),
                ),
            }
        }
        if self.contact.telephone.contains(' ') {
            bad(
                "saml.contact.telephone".into(),
                "no spaces (SPID rule), e.g. +390612345678".into(),
            );
        }
        if self.attribute_set.is_empty() {
            bad(
                "saml.attribute_set".into(),
                "at least one attribute set".into(),
            );
        }
        if self.federation.is_empty() {
            bad(
                "saml.federation".into(),
                "at least one federation (SPID, CIE...)".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.federation.iter().enumerate() {
            let key = |k: &str| format!("saml.federation[{i}].{k}");
            if f.name.is_empty()
                || !f
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bad(key("name"), "lowercase letters, digits and `-`".into());
            }
            if !names.insert(f.name.as_str()) {
                bad(key("name"), format!("`{}` is used twice", f.name));
            }
            if f.metadata_files.is_empty() && f.metadata_url.is_none() {
                bad(
                    key("metadata_files"),
                    "give metadata files or a metadata_url".into(),
                );
            }
            for (j, p) in f.metadata_files.iter().enumerate() {
                if !p.is_file() {
                    bad(
                        format!("saml.federation[{i}].metadata_files[{j}]"),
                        format!("{} is not a file", p.display()),
                    );
                }
            }
            if let Some(url) = &f.metadata_url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    bad(key("metadata_url"), "must be an http(s) URL".into());
                }
                if f.metadata_signing_certs.is_empty() {
                    bad(
                        key("metadata_signing_certs"),
                        "a fetched aggregate must be verified: pin its signing certificate".into(),
                    );
                }
                if f.cache_dir.is_none() {
                    bad(
                        key("cache_dir"),
                        "where to keep the last good copy of metadata_url".into(),
                    );
                }
            }
            if f.min_rsa_bits < 2048 {
                bad(key("min_rsa_bits"), "at least 2048".into());
            }
            if usize::from(f.attribute_set) >= self.attribute_set.len() {
                bad(key("attribute_set"), "no such attribute set".into());
            }
            if f.refresh_interval < Duration::from_secs(1) {
                bad(key("refresh_interval"), "at least 1s".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SamlConfig {
        let cert = std::env::current_exe().unwrap();
        SamlConfig {
            entity_id: "https://sp.example.it/".into(),
            base_url: "https://sp.example.it".into(),
            cert: cert.clone(),
            key: cert.clone(),
            binding: Binding::Redirect,
            clock_skew: default_skew(),
            browser_binding: false,
            max_logins_per_address: default_max_logins(),
            login_rate_window: default_login_window(),
            service_name: default_service_name(),
            organization: Organization {
                name: "o".into(),
                display_name: "o".into(),
                url: "https://o/".into(),
            },
            contact: Contact {
                public: true,
                ipa_code: Some("c_h501".into()),
                vat_number: None,
                fiscal_code: None,
                email: "a@b".into(),
                telephone: "+39061234".into(),
                municipality: None,
                nace2_code: None,
                billing: None,
            },
            attribute_set: default_attribute_sets(),
            federation: vec![FederationConfig {
                name: "spid".into(),
                profile: ProfileName::Spid,
                metadata_files: vec![cert],
                metadata_url: None,
                metadata_signing_certs: vec![],
                metadata_ca: None,
                refresh_interval: default_refresh(),
                cache_dir: None,
                min_rsa_bits: 2048,
                attribute_set: 0,
            }],
        }
    }

    fn problems(c: &SamlConfig) -> Vec<String> {
        let mut out = Vec::new();
        c.validate(|k, _| out.push(k));
        out
    }

    #[test]
    fn a_complete_configuration_has_no_problem() {
        assert_eq!(problems(&base()), Vec::<String>::new());
    }

    #[test]
    fn each_unsafe_setting_is_named_by_its_key() {
        let mut c = base();
        c.base_url = "https://sp.example.it/x/".into();
        c.contact.ipa_code = None;
        c.contact.telephone = "+39 06 1234".into();
        c.federation[0].metadata_url = Some("https://registry/".into());
        c.federation[0].min_rsa_bits = 1024;
        c.federation[0].attribute_set = 3;
        c.federation.push(c.federation[0].clone());
        let p = problems(&c);
        for key in [
            "saml.base_url",
            "saml.contact.ipa_code",
            "saml.contact.telephone",
            "saml.federation[0].metadata_signing_certs",
            "saml.federation[0].cache_dir",
            "saml.federation[0].min_rsa_bits",
            "saml.federation[0].attribute_set",
            "saml.federation[1].name",
        ] {
            assert!(p.iter().any(|k| k == key), "{key} not in {p:?}");
        }
        let mut c = base();
        c.contact.public = false;
        c.federation.clear();
        let p = problems(&c);
        assert!(p.contains(&"saml.contact".to_string()));
        assert!(p.contains(&"saml.federation".to_string()));
    }

    #[test]
    fn each_kind_of_provider_is_told_what_it_misses() {
        let cie = |c: &mut SamlConfig| {
            let mut f = c.federation[0].clone();
            f.name = "cie".into();
            f.profile = ProfileName::Cie;
            c.federation = vec![f];
        };
        // A public CIE SP: the municipality.
        let mut c = base();
        cie(&mut c);
        assert_eq!(problems(&c), vec!["saml.contact.municipality"]);
        c.contact.municipality = Some("058091".into());
        assert_eq!(problems(&c), Vec::<String>::new());
        // A private CIE SP: VAT number, fiscal code and NACE code too.
        c.contact.public = false;
        c.contact.ipa_code = None;
        c.contact.vat_number = Some("IT12345678901".into());
        assert_eq!(
            problems(&c),
            vec!["saml.contact.fiscal_code", "saml.contact.nace2_code"]
        );
        // A private SPID SP: the invoicing data, each field checked.
        let mut c = base();
        c.contact.public = false;
        c.contact.vat_number = Some("IT12345678901".into());
        assert_eq!(problems(&c), vec!["saml.contact.billing"]);
        c.contact.billing = Some(Billing {
            denomination: "Patronato\u{1}Esempio".into(),
            vat_number: Some("12345678901".into()),
            fiscal_code: None,
            address: "Via Nazionale".into(),
            number: Some("10".into()),
            postal_code: "0018".into(),
            municipality: "Roma".into(),
            province: Some("Roma".into()),
            country: "it".into(),
            email: None,
        });
        assert_eq!(
            problems(&c),
            vec![
                "saml.contact.billing.denomination",
                "saml.contact.billing.vat_number",
                "saml.contact.billing.postal_code",
                "saml.contact.billing.province",
                "saml.contact.billing.country",
            ]
        );
    }
}
