//! Our SP metadata (spec/saml-spid-cie.md, "SP metadata we publish"): one signed
//! `EntityDescriptor` per federation profile. SPID: `ContactPerson contactType="other"`
//! with the `spid:` extensions (`IPACode`/`VATNumber`/`FiscalCode`, `Public`/`Private`),
//! a `billing` contact for private SPs. CIE: an `administrative` contact with the `cie:`
//! extensions and only the eIDAS minimum attribute set. Every value is XML-escaped.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::authn_request::Profile;
use super::config::{AttributeSet, Contact, Organization};
use super::xmldsig::{SignatureError, sign_enveloped, signature_template};
use crate::pages::escape_html as esc;

const SPID_EXT: &str = "https://spid.gov.it/saml-extensions";
const CIE_EXT: &str = "https://www.cartaidentita.interno.gov.it/saml-extensions";
/// The eIDAS minimum data set CIE releases.
const CIE_ATTRIBUTES: [&str; 4] = ["name", "familyName", "dateOfBirth", "fiscalNumber"];

/// What the metadata says about us.
pub struct SpDescription<'a> {
    pub entity_id: &'a str,
    pub acs_url: &'a str,
    pub slo_url: &'a str,
    pub cert_der: &'a [u8],
    pub service_name: &'a str,
    pub organization: &'a Organization,
    pub contact: &'a Contact,
    pub attribute_sets: &'a [AttributeSet],
}

/// A stable metadata ID derived from the entityID (XML IDs must not start with a digit).
fn metadata_id(entity_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, entity_id.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("_{hex}")
}

/// The unsigned metadata (with a signature template in place).
pub fn unsigned(d: &SpDescription<'_>, profile: Profile) -> String {
    let id = metadata_id(d.entity_id);
    let ext_ns = match profile {
        Profile::Cie => CIE_EXT,
        Profile::Spid | Profile::Generic => SPID_EXT,
    };
    let prefix = if profile == Profile::Cie {
        "cie"
    } else {
        "spid"
    };
    let mut x = String::with_capacity(4096);
    let _ = write!(
        x,
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
xmlns:{prefix}=\"{ext_ns}\" entityID=\"{eid}\" ID=\"{id}\">{sig}\
<md:SPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
AuthnRequestsSigned=\"true\" WantAssertionsSigned=\"true\">\
<md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\
<ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\
</md:KeyDescriptor>\
<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{slo}\"/>\
<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:transient</md:NameIDFormat>\
<md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" \
Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>",
        eid = esc(d.entity_id),
        sig = signature_template(&id, d.cert_der),
        cert = STANDARD.encode(d.cert_der),
        slo = esc(d.slo_url),
        acs = esc(d.acs_url),
    );
    let cie_set = [AttributeSet {
        attributes: CIE_ATTRIBUTES.map(String::from).to_vec(),
    }];
    let sets: &[AttributeSet] = if profile == Profile::Cie {
        &cie_set
    } else {
        d.attribute_sets
    };
    for (i, set) in sets.iter().enumerate() {
        let _ = write!(
            x,
            "<md:AttributeConsumingService index=\"{i}\"><md:ServiceName xml:lang=\"it\">{}</md:ServiceName>",
            esc(d.service_name)
        );
        for a in &set.attributes {
            let _ = write!(
                x,
                "<md:RequestedAttribute Name=\"{}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\"/>",
                esc(a)
            );
        }
        x.push_str("</md:AttributeConsumingService>");
    }
    let o = d.organization;
    let _ = write!(
        x,
        "</md:SPSSODescriptor><md:Organization>\
<md:OrganizationName xml:lang=\"it\">{}</md:OrganizationName>\
<md:OrganizationDisplayName xml:lang=\"it\">{}</md:OrganizationDisplayName>\
<md:OrganizationURL xml:lang=\"it\">{}</md:OrganizationURL></md:Organization>",
        esc(&o.name),
        esc(&o.display_name),
        esc(&o.url)
    );
    let c = d.contact;
    let contact_type = if profile == Profile::Cie {
        "administrative"
    } else {
        "other"
    };
    let _ = write!(
        x,
        "<md:ContactPerson contactType=\"{contact_type}\"><md:Extensions>"
    );
    let mut ext = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            let _ = write!(x, "<{prefix}:{name}>{}</{prefix}:{name}>", esc(v));
        }
    };
    if c.public {
        ext("IPACode", &c.ipa_code);
    }
    ext("VATNumber", &c.vat_number);
    ext("FiscalCode", &c.fiscal_code);
    if profile == Profile::Cie {
        if !c.public {
            ext("NACE2Code", &c.nace2_code);
        }
        ext("Municipality", &c.municipality);
    }
    let _ = write!(
        x,
        "<{prefix}:{kind}/></md:Extensions>",
        kind = if c.public { "Public" } else { "Private" }
    );
    if profile == Profile::Cie {
        // CIE: the contact names the company (the organization), before the address.
        let _ = write!(x, "<md:Company>{}</md:Company>", esc(&o.name));
    }
    let _ = write!(
        x,
        "<md:EmailAddress>{}</md:EmailAddress><md:TelephoneNumber>{}</md:TelephoneNumber></md:ContactPerson>",
        esc(&c.email),
        esc(&c.telephone)
    );
    if !c.public && profile != Profile::Cie {
        // Who AgID invoices (Avviso 29): the CessionarioCommittente of the billing contact.
        let _ = write!(x, "<md:ContactPerson contactType=\"billing\">");
        if let Some(b) = &c.billing {
            let _ = write!(
                x,
                "<md:Extensions xmlns:fpa=\"https://spid.gov.it/invoicing-extensions\">\
<fpa:CessionarioCommittente><fpa:DatiAnagrafici>"
            );
            if let Some(v) = &b.vat_number {
                let (country, code) = v.split_at(v.len().min(2));
                let _ = write!(
                    x,
                    "<fpa:IdFiscaleIVA><fpa:IdPaese>{}</fpa:IdPaese><fpa:IdCodice>{}</fpa:IdCodice></fpa:IdFiscaleIVA>",
                    esc(country),
                    esc(code)
                );
            }
            if let Some(f) = &b.fiscal_code {
                let _ = write!(x, "<fpa:CodiceFiscale>{}</fpa:CodiceFiscale>", esc(f));
            }
            let _ = write!(
                x,
                "<fpa:Anagrafica><fpa:Denominazione>{}</fpa:Denominazione></fpa:Anagrafica></fpa:DatiAnagrafici>\
<fpa:Sede><fpa:Indirizzo>{}</fpa:Indirizzo>",
                esc(&b.denomination),
                esc(&b.address)
            );
            if let Some(n) = &b.number {
                let _ = write!(x, "<fpa:NumeroCivico>{}</fpa:NumeroCivico>", esc(n));
            }
            let _ = write!(
                x,
                "<fpa:CAP>{}</fpa:CAP><fpa:Comune>{}</fpa:Comune>",
                esc(&b.postal_code),
                esc(&b.municipality)
            );
            if let Some(p) = &b.province {
                let _ = write!(x, "<fpa:Provincia>{}</fpa:Provincia>", esc(p));
            }
            let _ = write!(
                x,
                "<fpa:Nazione>{}</fpa:Nazione></fpa:Sede></fpa:CessionarioCommittente></md:Extensions>",
                esc(&b.country)
            );
        }
        let _ = write!(
            x,
            "<md:Company>{}</md:Company><md:EmailAddress>{}</md:EmailAddress>\
<md:TelephoneNumber>{}</md:TelephoneNumber></md:ContactPerson>",
            esc(&o.name),
            esc(c
                .billing
                .as_ref()
                .and_then(|b| b.email.as_ref())
                .unwrap_or(&c.email)),
            esc(&c.telephone)
        );
    }
    x.push_str("</md:EntityDescriptor>");
    x
}

/// The signed metadata.
pub fn signed(
    d: &SpDescription<'_>,
    profile: Profile,
    key_der: &[u8],
) -> Result<String, SignatureError> {
    sign_enveloped(&unsigned(d, profile), key_der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::metadata::MD_NS;
    use crate::saml::xmldsig::verify_signed_element;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    fn keys() -> (Vec<u8>, Vec<u8>) {
        let c = include_str!("../../tests/fixtures/saml/idp-test.crt.pem");
        let k = include_str!("../../tests/fixtures/saml/idp-test.key.pem");
        (
            CertificateDer::from_pem_slice(c.as_bytes())
                .unwrap()
                .to_vec(),
            PrivateKeyDer::from_pem_slice(k.as_bytes())
                .unwrap()
                .secret_der()
                .to_vec(),
        )
    }

    fn org() -> Organization {
        Organization {
            name: "Patronato <Test> & Co".into(),
            display_name: "Patronato Test".into(),
            url: "https://patronato.example.it/".into(),
        }
    }

    fn contact(public: bool) -> Contact {
        Contact {
            public,
            ipa_code: Some("c_h501".into()),
            vat_number: if public {
                None
            } else {
                Some("IT12345678901".into())
            },
            fiscal_code: None,
            email: "spid@example.it".into(),
            telephone: "+390612345678".into(),
            municipality: Some("058091".into()),
            nace2_code: Some("94.99".into()),
            billing: None,
        }
    }

    fn describe<'a>(
        cert: &'a [u8],
        org: &'a Organization,
        contact: &'a Contact,
        sets: &'a [AttributeSet],
    ) -> SpDescription<'a> {
        SpDescription {
            entity_id: "https://sp.example.it/",
            acs_url: "https://sp.example.it/_varco/saml/acs",
            slo_url: "https://sp.example.it/_varco/saml/slo",
            cert_der: cert,
            service_name: "Servizi",
            organization: org,
            contact,
            attribute_sets: sets,
        }
    }

    #[test]
    fn spid_public_metadata_is_signed_and_carries_the_extensions() {
        let (cert, key) = keys();
        let (o, c) = (org(), contact(true));
        let sets = [AttributeSet {
            attributes: vec!["fiscalNumber".into(), "name".into()],
        }];
        let xml = signed(&describe(&cert, &o, &c, &sets), Profile::Spid, &key).unwrap();
        let v = verify_signed_element(&xml, MD_NS, "EntityDescriptor", std::slice::from_ref(&cert))
            .unwrap();
        for needle in [
            "AuthnRequestsSigned=\"true\"",
            "WantAssertionsSigned=\"true\"",
            "index=\"0\" isDefault=\"true\"",
            "<md:SingleLogoutService",
            "<md:OrganizationName xml:lang=\"it\">Patronato &lt;Test&gt; &amp; Co</md:OrganizationName>",
            "contactType=\"other\"",
            "<spid:IPACode>c_h501</spid:IPACode>",
            "<spid:Public/>",
            "<md:TelephoneNumber>+390612345678</md:TelephoneNumber>",
            "<md:RequestedAttribute Name=\"fiscalNumber\"",
        ] {
            assert!(v.xml.contains(needle), "missing {needle}");
        }
        assert!(xml.contains("http://www.w3.org/2001/04/xmlenc#sha256"));
        assert!(!xml.contains("billing"));
    }

    #[test]
    fn private_spid_and_cie_metadata_differ_as_the_rules_say() {
        let (cert, key) = keys();
        let (o, c) = (org(), contact(false));
        let sets = [AttributeSet {
            attributes: vec!["spidCode".into(), "email".into()],
        }];
        let private = signed(&describe(&cert, &o, &c, &sets), Profile::Spid, &key).unwrap();
        assert!(private.contains("<spid:Private/>"));
        assert!(private.contains("<spid:VATNumber>IT12345678901</spid:VATNumber>"));
        assert!(!private.contains("IPACode"));
        assert!(private.contains("contactType=\"billing\""));

        let (o, c) = (org(), contact(true));
        let cie = signed(&describe(&cert, &o, &c, &sets), Profile::Cie, &key).unwrap();
        assert!(
            cie.contains("xmlns:cie=\"https://www.cartaidentita.interno.gov.it/saml-extensions\"")
        );
        assert!(cie.contains("contactType=\"administrative\""));
        assert!(
            cie.contains("<cie:Public/>")
                && cie.contains("<cie:Municipality>058091</cie:Municipality>")
                && cie.contains("<md:Company>")
        );
        // Only the eIDAS minimum set, whatever the configured sets say.
        assert!(!cie.contains("spidCode") && !cie.contains("\"email\""));
        for a in CIE_ATTRIBUTES {
            assert!(cie.contains(&format!("Name=\"{a}\"")));
        }
        assert!(cie.contains("HTTP-Redirect\" Location=\"https://sp.example.it/_varco/saml/slo\""));
    }
}
