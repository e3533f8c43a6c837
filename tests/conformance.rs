//! Our SP metadata checked by AgID's own tool, `spid-sp-test` (PyPI, pinned in
//! tests/conformance/requirements.txt; `make test` installs it into target/spid-venv): the
//! published XSDs (`saml-schema-metadata-sp-spid-av29`, `saml-schema-metadata-sp-cie`) and
//! the technical rules of each profile, for a public and a private service provider of
//! SPID and of CIE, as `varco saml metadata` prints them for an operator.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

fn tool() -> PathBuf {
    let path = std::env::var_os("SPID_SP_TEST").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spid-venv/bin/spid_sp_test"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: `make test` installs spid-sp-test (tests/conformance/requirements.txt)",
        path.display()
    );
    path
}

/// A configuration of a service provider of kind `public` with both federations.
fn config(dir: &Path, public: bool) -> String {
    let contact = if public {
        "public = true\nipa_code = \"c_h501\"\nmunicipality = \"058091\"\n"
    } else {
        "public = false\nvat_number = \"IT12345678901\"\nfiscal_code = \"12345678901\"\n\
         nace2_code = \"94.99\"\nmunicipality = \"058091\"\n"
    };
    let billing = if public {
        ""
    } else {
        "[saml.contact.billing]\ndenomination = \"Patronato Esempio S.r.l.\"\n\
         vat_number = \"IT12345678901\"\naddress = \"Via Nazionale\"\nnumber = \"10\"\n\
         postal_code = \"00184\"\nmunicipality = \"Roma\"\nprovince = \"RM\"\n"
    };
    format!(
        r#"
[[server.listener]]
address = "127.0.0.1:0"
[upstream.app]
url = "http://127.0.0.1:9"
[[route]]
path = "/"
upstream = "app"
public = true
[saml]
entity_id = "https://servizi.patronato.example.it/sp"
base_url = "https://servizi.patronato.example.it"
cert = "{dir}/saml-sp.pem"
key = "{dir}/saml-sp-key.pem"
[saml.organization]
name = "Patronato Esempio"
display_name = "Patronato Esempio - servizi online"
url = "https://www.patronato.example.it/"
[saml.contact]
{contact}email = "spid@patronato.example.it"
telephone = "+390612345678"
{billing}[[saml.federation]]
name = "spid"
profile = "spid"
metadata_files = ["{dir}/idp.xml"]
[[saml.federation]]
name = "cie"
profile = "cie"
metadata_files = ["{dir}/idp.xml"]
"#,
        dir = dir.display()
    )
}

#[test]
fn sp_metadata_passes_agids_checks_for_every_kind_of_provider() {
    let tool = tool();
    let dir = tempfile::tempdir().unwrap();
    let keys = varco::demo::certs::ensure_dev_saml(dir.path()).unwrap();
    let idp_cert = CertificateDer::from_pem_file(&keys.idp_cert).unwrap();
    std::fs::write(
        dir.path().join("idp.xml"),
        varco::saml::issuer::idp_metadata(
            "https://idp.example.it/",
            "https://idp.example.it/sso",
            "https://idp.example.it/slo",
            &idp_cert,
            "IdP",
        ),
    )
    .unwrap();
    let mut failures = Vec::new();
    for (profile, federation, public) in [
        ("spid-sp-public", "spid", true),
        ("spid-sp-private", "spid", false),
        ("cie-sp-public", "cie", true),
        ("cie-sp-private", "cie", false),
    ] {
        let cfg = dir.path().join(format!("{profile}.toml"));
        std::fs::write(&cfg, config(dir.path(), public)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_varco"))
            .args(["saml", "metadata", "--federation", federation, "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata = dir.path().join(format!("{profile}.xml"));
        std::fs::write(&metadata, &out.stdout).unwrap();
        let checked = Command::new(&tool)
            .arg("--metadata-url")
            .arg(format!("file://{}", metadata.display()))
            .args(["-pr", profile, "-d", "ERROR"])
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let summary = report
            .lines()
            .find(|l| l.contains("Spid QA: executed"))
            .unwrap_or("no summary")
            .to_string();
        if !checked.status.success() || !summary.contains(" 0 failed") {
            failures.push(format!(
                "{profile}: {summary}\n{}",
                report
                    .lines()
                    .filter(|l| l.starts_with("ERROR"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `varco saml certificate` for a public and a private SP, checked by AgID's certificate
/// validator (`spid-compliant-certificates`, installed with spid-sp-test): every rule of
/// Avviso 29 holds (it prints `[E]` lines and "violates" otherwise; the wrong sector is
/// refused, which shows the check can fail). The files are the operator's: the key
/// readable by its owner only; an existing file is not replaced without --force.
#[test]
fn the_sp_certificate_command_follows_avviso_29() {
    let validator = tool().with_file_name("spid-compliant-certificates");
    let dir = tempfile::tempdir().unwrap();
    let validate = |sector: &str, cert: &Path| {
        let out = Command::new(&validator)
            .args([
                "validator",
                "--out-form",
                "txt",
                "--sector",
                sector,
                "--crt-file",
            ])
            .arg(cert)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    for (sector, id) in [
        ("public", ["--ipa-code", "c_h501"]),
        ("private", ["--vat-number", "IT12345678901"]),
    ] {
        let out_dir = dir.path().join(sector);
        let run = || {
            Command::new(env!("CARGO_BIN_EXE_varco"))
                .args(["saml", "certificate", "--kind", sector])
                .args(id)
                .args([
                    "--org-name",
                    "Patronato Esempio",
                    "--entity-id",
                    "https://servizi.patronato.example.it/sp",
                    "--locality",
                    "Roma",
                    "--out-dir",
                ])
                .arg(&out_dir)
                .output()
                .unwrap()
        };
        let made = run();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let cert = out_dir.join("saml-sp.pem");
        let report = validate(sector, &cert);
        assert!(
            report.contains("Validating certificate") && !report.contains("violates"),
            "{sector}: {report}"
        );
        let other = if sector == "public" {
            "private"
        } else {
            "public"
        };
        assert!(validate(other, &cert).contains("violates"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(out_dir.join("saml-sp-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is the owner's alone");
        }
        assert!(out_dir.join("saml-sp.csr").is_file());
        let again = run();
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
        // --force replaces the files; the new key is the owner's alone even when the old
        // one was readable by others.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let key = out_dir.join("saml-sp-key.pem");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let before = std::fs::read(&key).unwrap();
            let forced = Command::new(env!("CARGO_BIN_EXE_varco"))
                .args(["saml", "certificate", "--force", "--kind", sector])
                .args(id)
                .args([
                    "--org-name",
                    "P",
                    "--entity-id",
                    "https://sp/",
                    "--locality",
                    "Roma",
                ])
                .arg("--out-dir")
                .arg(&out_dir)
                .output()
                .unwrap();
            assert!(forced.status.success());
            assert_ne!(std::fs::read(&key).unwrap(), before);
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "a replaced key is the owner's alone");
        }
    }
}
