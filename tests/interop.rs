//! Interop with an independent SAML implementation: `pysaml2` (PyPI) run as the IdP by
//! tests/interop/pysaml2_idp.py on loopback, configured with the SP metadata that
//! `varco saml metadata` prints. A SPID-profile and a CIE-profile login complete through
//! the real gateway, up to the identity header the upstream receives.
//!
//! Needs `python3` with `pip install -r tests/interop/requirements.txt` and the `xmlsec1`
//! binary (`make test` installs both).

mod common;

use common::free_port;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, request, upstreams};

const SP: &str = "https://sp.test/";

struct Idp(Child);
impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(up: SocketAddr) -> String {
    format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/"
upstream = "app"
public = false
[saml]
entity_id = "{SP}"
base_url = "https://gw.test"
cert = "@DIR@/sp.pem"
key = "@DIR@/sp-key.pem"
[saml.organization]
name = "Interop"
display_name = "Interop SP"
url = "https://sp.test/"
[saml.contact]
public = true
ipa_code = "c_h501"
email = "spid@sp.test"
telephone = "+390600000000"
municipality = "H501"
[[saml.federation]]
name = "spid"
profile = "spid"
metadata_files = ["@DIR@/spid-idp.xml"]
[[saml.federation]]
name = "cie"
profile = "cie"
metadata_files = ["@DIR@/cie-idp.xml"]
"#
    )
}

/// Our SP metadata for `federation`, printed by the command (as an operator would).
fn sp_metadata(dir: &Path, cfg: &str, federation: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["saml", "metadata", "--federation", federation, "--config"])
        .arg(dir.join("varco.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{cfg}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn start_idp(dir: &Path, profile: &str, sp_metadata: &Path) -> (Idp, String, String) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(&python)
        .args(["-c", "import saml2"])
        .output()
        .expect("python3 is needed for the pysaml2 interop test");
    assert!(
        check.status.success(),
        "pysaml2 is missing: run `make test` or `pip install -r tests/interop/requirements.txt` (and install xmlsec1)"
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let entity = format!("{base}/idp");
    let out = dir.join(format!("{profile}-idp.xml"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pysaml2_idp.py");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml");
    let mut child = Command::new(&python)
        .arg(script)
        .args([
            "--port",
            &port.to_string(),
            "--base-url",
            &base,
            "--entity-id",
            &entity,
        ])
        .arg("--cert")
        .arg(fixtures.join("idp-test.crt.pem"))
        .arg("--key")
        .arg(fixtures.join("idp-test.key.pem"))
        .arg("--sp-metadata")
        .arg(sp_metadata)
        .arg("--metadata-out")
        .arg(&out)
        .args([
            "--profile",
            profile,
            "--fiscal-number",
            "TINIT-RSSMRA80A01H501U",
            "--name",
            "Mario",
            "--family-name",
            "Rossi",
            "--date-of-birth",
            "1980-01-01",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "ready" {
                let _ = tx.send(());
            }
        }
    });
    let idp = Idp(child);
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the pysaml2 IdP did not become ready");
    (idp, entity, std::fs::read_to_string(out).unwrap())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr(html: &str, needle: &str) -> Option<String> {
    let start = html.find(needle)? + needle.len();
    Some(unescape(&html[start..start + html[start..].find('"')?]))
}

/// Login through the pysaml2 IdP `entity`; returns the upstream's view of the request.
async fn login(gw: &Gateway, entity: &str, level: &str) -> common::Resp {
    let body = format!(
        "idp={}&return=%2Fapp&level={level}",
        form_urlencoded::byte_serialize(entity.as_bytes()).collect::<String>()
    );
    let form = ("content-type", "application/x-www-form-urlencoded");
    let r = request("POST", &gw.url("/_varco/saml/login"), &[form], body).await;
    assert_eq!(r.status, 302, "{}", r.text());
    // The login-binding cookie goes back with the IdP's answer, as a browser sends it.
    let binding = r.cookie();
    let sso = r.headers["location"].to_str().unwrap().to_string();
    let page = request("GET", &sso, &[], "").await;
    assert_eq!(
        page.status,
        200,
        "pysaml2 refused our AuthnRequest: {}",
        page.text()
    );
    let html = page.text();
    let action = attr(&html, "action=\"").unwrap();
    assert_eq!(action, "https://gw.test/_varco/saml/acs");
    let response = attr(&html, "name=\"SAMLResponse\" value=\"").unwrap();
    let relay = attr(&html, "name=\"RelayState\" value=\"").unwrap();
    let body = format!(
        "SAMLResponse={}&RelayState={}",
        form_urlencoded::byte_serialize(response.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(relay.as_bytes()).collect::<String>()
    );
    let r = request(
        "POST",
        &gw.url("/_varco/saml/acs"),
        &[form, ("cookie", &binding)],
        body,
    )
    .await;
    assert_eq!(r.status, 303, "{}\n{}", r.text(), gw.logs().join("\n"));
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = request(
        "GET",
        &gw.url("/app"),
        &[("cookie", &cookie), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    r
}

fn claims(resp: &common::Resp) -> serde_json::Value {
    use base64::Engine as _;
    let token = resp.echoed("x-varco-assertion").pop().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysaml2_idps_complete_spid_and_cie_logins_through_the_gateway() {
    let up = upstreams::echo().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["sp.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (sp_cert, sp_key) = (cert.pem(), key.serialize_pem());
    // Our metadata first (the IdPs need it), from the operator's command.
    let work = tempfile::tempdir().unwrap();
    let cfg = config(up).replace("@DIR@", &work.path().display().to_string());
    std::fs::write(work.path().join("varco.toml"), &cfg).unwrap();
    std::fs::write(work.path().join("sp.pem"), &sp_cert).unwrap();
    std::fs::write(work.path().join("sp-key.pem"), &sp_key).unwrap();
    for f in ["spid-idp.xml", "cie-idp.xml"] {
        std::fs::write(work.path().join(f), "placeholder").unwrap();
    }
    let mut idps = Vec::new();
    let mut metadata = Vec::new();
    for profile in ["spid", "cie"] {
        let sp_meta = work.path().join(format!("sp-{profile}.xml"));
        std::fs::write(&sp_meta, sp_metadata(work.path(), &cfg, profile)).unwrap();
        let (idp, entity, meta) = start_idp(work.path(), profile, &sp_meta);
        idps.push((idp, entity));
        metadata.push(meta);
    }
    let gw = Gateway::start_with(
        &config(up),
        &[
            ("sp.pem", &sp_cert),
            ("sp-key.pem", &sp_key),
            ("spid-idp.xml", &metadata[0]),
            ("cie-idp.xml", &metadata[1]),
        ],
    );
    let started = Instant::now();
    let chooser = request(
        "GET",
        &gw.url("/_varco/login"),
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert!(chooser.text().contains("Entra con CIE"));

    let spid = login(&gw, &idps[0].1, "SpidL2").await;
    let c = claims(&spid);
    assert_eq!(c["sub"], "RSSMRA80A01H501U");
    assert_eq!(c["amr"], "spid");
    assert_eq!(c["acr"], "https://www.spid.gov.it/SpidL2");
    assert_eq!(c["idp"], idps[0].1.as_str());
    assert_eq!(c["family_name"], "Rossi");

    let cie = login(&gw, &idps[1].1, "SpidL3").await;
    let c = claims(&cie);
    assert_eq!(c["amr"], "cie");
    assert_eq!(c["acr"], "https://www.spid.gov.it/SpidL3");
    assert_eq!(c["sub"], "RSSMRA80A01H501U");
    assert!(started.elapsed() < Duration::from_secs(60));
}
