//! The legacy PIN switch-off and the telephone PIN through a real gateway over loopback,
//! with a controllable clock: the gateway runs in the test process (`app::start_with_clock`)
//! so the test can move its clock past the cutoff, a minor's 18th birthday and a telephone
//! PIN's expiry. A second test runs the real binary and reads its logs for secrets.

mod common;

use common::free_port;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{Redis, Resp, request, upstreams};
use varco::identity::Date;
use varco::identity::fiscal_code::check_character;
use varco::session::SystemClock;

const DAY: u64 = 86_400;
const API: (&str, &str) = ("accept", "application/json");
const BROWSER: (&str, &str) = ("accept", "text/html");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const TOKEN: &str = "contact-centre-token-0123456789abcdef";

/// `n` days from today in Italy, as the gateway counts days (between 22:00 and 24:00 UTC
/// the Italian date is already the next one).
fn days_from_today(n: i64) -> Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let utc_days = (secs / DAY) as i64;
    // Italy is UTC+1 or +2: its date is the UTC one or the next.
    let ahead = i64::from(Date::from_days_since_epoch(utc_days) != varco::pin::italian_date(secs));
    Date::from_days_since_epoch(utc_days + ahead + n)
}

/// A valid fiscal code for a person born on `birth`.
fn fiscal_code(names: &str, birth: Date, female: bool) -> String {
    const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";
    let day = birth.day + if female { 40 } else { 0 };
    let first15 = format!(
        "{names}{:02}{}{day:02}H501",
        birth.year.rem_euclid(100),
        MONTHS[usize::from(birth.month) - 1] as char
    );
    let c = check_character(first15.as_bytes()) as char;
    format!("{first15}{c}")
}

/// The people of the tests.
struct People {
    /// Adult, PIN issued before the issuance stop.
    adult: String,
    /// Under guardianship (registry), PIN issued after the stop.
    ward: String,
    /// No Italian document (registry), PIN issued before the stop.
    foreigner: String,
    /// Turns 18 in 10 days; PIN issued after the stop.
    minor: String,
    /// Adult whose PIN was issued after the stop, in no category.
    late: String,
}

fn people() -> People {
    // 18 years before the day 10 days from now (29 February: the 28th).
    let d = days_from_today(10);
    let minor_birth = Date::new(d.year - 18, d.month, d.day)
        .or_else(|| Date::new(d.year - 18, d.month, 28))
        .unwrap();
    People {
        adult: fiscal_code("RSSMRA", Date::new(1980, 1, 1).unwrap(), false),
        ward: fiscal_code("VRDLGU", Date::new(1970, 3, 12).unwrap(), false),
        foreigner: fiscal_code("SMTJHN", Date::new(1990, 7, 4).unwrap(), false),
        minor: fiscal_code("BNCLRA", minor_birth, true),
        late: fiscal_code("NREGPP", Date::new(1985, 11, 30).unwrap(), false),
    }
}

fn files(p: &People) -> Vec<(&'static str, String)> {
    let h = |pin: &str| varco::pin::hash_secret(pin).unwrap();
    let before_stop = days_from_today(-400);
    let after_stop = days_from_today(-30);
    let pins = format!(
        "fiscal_code,issued,date_of_birth,hash\n\
{},{before_stop},,{}\n{},{after_stop},,{}\n{},{before_stop},,{}\n{},{after_stop},,{}\n{},{after_stop},,{}\n",
        p.adult,
        h("Adulto-1980"),
        p.ward,
        h("Tutela-1970"),
        p.foreigner,
        h("Estero-1990"),
        p.minor,
        h("Minore-0000"),
        p.late,
        h("Tardi-1985"),
    );
    let registry = format!(
        "fiscal_code,category,valid_to\n{},guardianship\n{},no_italian_document\n",
        p.ward, p.foreigner
    );
    vec![("pins.csv", pins), ("eccezioni.csv", registry)]
}

fn config(up: SocketAddr, dir: &std::path::Path) -> String {
    format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[session]
idle_timeout = "120d"
absolute_timeout = "120d"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/servizi"
upstream = "app"
public = false
[route.policy]
methods = ["spid", "cie", "cns", "pin"]
[[route]]
path = "/api/legacy"
upstream = "app"
public = false
[route.policy]
methods = ["spid", "cie", "cns", "pin"]
[[route]]
path = "/api/alto"
upstream = "app"
public = false
min_level = "SpidL2"
[route.policy]
methods = ["spid", "cie", "cns", "pin"]
[[route]]
path = "/pubblico"
upstream = "app"
public = true
[[route]]
host = "altro.test"
path = "/"
upstream = "app"
public = false
[route.policy]
methods = ["spid", "pin"]
[[route]]
path = "/fascicolo"
upstream = "app"
public = false
[[route]]
path = "/minori"
upstream = "app"
public = false
[[route]]
path = "/tutela"
upstream = "app"
public = false
[route.policy]
methods = ["spid", "pin"]
[[route]]
path = "/stranieri"
upstream = "app"
public = false
[pin]
issuance_stop = "{stop}"
cutoff = "{cutoff}"
verifier_file = "{dir}/pins.csv"
form_path = "/PortaleINPS/login"
basic_paths = ["/api/legacy", "/api/alto"]
legacy_cookie = "INPSSESSION"
[pin.exceptions]
minor = ["/minori"]
guardianship = ["/tutela"]
no_italian_document = ["/stranieri"]
[pin.registry]
file = "{dir}/eccezioni.csv"
[pin.rate_limit]
max_failures_per_fiscal_code = 3
max_failures_per_address = 8
window = "10m"
[pin.telephone]
verify_tokens = ["{TOKEN}"]
"#,
        stop = days_from_today(-200),
        cutoff = days_from_today(30),
        dir = dir.display(),
    )
}

/// The gateway in this process, with its clock.
struct InProcess {
    addr: SocketAddr,
    clock: Arc<SystemClock>,
    shutdown: varco::server::ShutdownHandle,
    _dir: tempfile::TempDir,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

impl InProcess {
    async fn start(up: SocketAddr, p: &People) -> InProcess {
        Self::start_with(up, p, |c| c).await
    }

    /// With the configuration edited by `edit`.
    async fn start_with(up: SocketAddr, p: &People, edit: impl Fn(String) -> String) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files(p) {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = edit(config(up, dir.path()));
        let cfg = varco::config::Config::from_toml("pin-test", &text).unwrap();
        let clock = Arc::new(SystemClock::default());
        let running = varco::app::start_with_clock(cfg, clock.clone())
            .await
            .unwrap();
        let addr = running.addrs[0];
        let shutdown = running.shutdown.clone();
        tokio::spawn(running.run());
        InProcess {
            addr,
            clock,
            shutdown,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn advance_days(&self, days: u64) {
        self.clock.advance(Duration::from_secs(days * DAY));
    }
}

fn cookie_of(r: &Resp) -> String {
    r.headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .unwrap_or_default()
}

async fn form_login(url: &str, cf: &str, pin: &str) -> Resp {
    let body = format!("codice_fiscale={cf}&pin={pin}&return=%2Fservizi%2Fx");
    request("POST", url, &[FORM, API], body).await
}

/// The claims of the signed header the upstream received.
fn claims(r: &Resp) -> serde_json::Value {
    let jwt = r
        .echoed("x-varco-assertion")
        .pop()
        .expect("no identity header");
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn basic(cf: &str, pin: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{cf}:{pin}"))
    )
}

async fn get(gw: &InProcess, path: &str, cookie: &str) -> Resp {
    request("GET", &gw.url(path), &[API, ("cookie", cookie)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_off_before_and_after_the_cutoff() {
    let up = upstreams::echo().await;
    let p = people();
    // Many attempts from one address here: the limits are the rate-limit test's business.
    let gw = InProcess::start_with(up, &p, |c| {
        c.replace(
            "max_failures_per_address = 8",
            "max_failures_per_address = 100",
        )
        .replace(
            "max_failures_per_fiscal_code = 3",
            "max_failures_per_fiscal_code = 20",
        )
    })
    .await;

    // Before the cutoff: the chooser offers the PIN; the gateway's own form is served.
    let chooser = request(
        "GET",
        &gw.url("/_varco/login?return=%2Fservizi"),
        &[BROWSER],
        "",
    )
    .await;
    assert!(
        chooser.text().contains("/_varco/pin/login"),
        "{}",
        chooser.text()
    );
    let form = request(
        "GET",
        &gw.url("/_varco/pin/login?return=%2Fservizi"),
        &[BROWSER],
        "",
    )
    .await;
    assert_eq!(form.status, 200);
    assert!(form.text().contains("name=\"codice_fiscale\""));

    // The legacy form at its configured path: a PIN session at the Legacy level.
    let r = form_login(&gw.url("/PortaleINPS/login"), &p.adult, "Adulto-1980").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.headers["location"], "/servizi/x");
    let adult = cookie_of(&r);
    let r = get(&gw, "/servizi/x", &adult).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = claims(&r);
    assert_eq!(c["amr"], "pin");
    assert_eq!(c["acr"], varco::identity::LEGACY_ACR);
    assert_eq!(c["sub"], p.adult.as_str());
    // A route whose policy does not list pin (none here) asks for a SPID/CIE/CNS login.
    let r = get(&gw, "/fascicolo", &adult).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "login_required");
    // Dedicated services are not for a general PIN.
    let r = get(&gw, "/minori", &adult).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "login_required");

    // A form posted from another site logs nobody in (login CSRF).
    let r = request(
        "POST",
        &gw.url("/_varco/pin/login"),
        &[FORM, API, ("sec-fetch-site", "cross-site")],
        format!("codice_fiscale={}&pin=Adulto-1980", p.adult),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "pin_form_cross_site");
    assert!(r.headers.get("set-cookie").is_none());

    // A wrong PIN: 401, no session.
    let r = form_login(&gw.url("/_varco/pin/login"), &p.adult, "Sbagliato-1").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_invalid");
    assert!(r.headers.get("set-cookie").is_none());

    // HTTP Basic on its paths: one request, the header not forwarded.
    let auth = basic(&p.adult, "Adulto-1980");
    let r = request(
        "GET",
        &gw.url("/api/legacy/estratto"),
        &[API, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.echoed("authorization").is_empty());
    assert_eq!(claims(&r)["amr"], "pin");
    let bad = basic(&p.adult, "Sbagliato-2");
    let r = request(
        "GET",
        &gw.url("/api/legacy/estratto"),
        &[API, ("authorization", &bad)],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_invalid");
    // Basic elsewhere is not a PIN login.
    let r = request(
        "GET",
        &gw.url("/servizi"),
        &[API, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.json()["error"], "login_required");

    // The legacy cookie before the cutoff: an ordinary login redirect; never forwarded.
    let r = request(
        "GET",
        &gw.url("/servizi"),
        &[BROWSER, ("cookie", "INPSSESSION=abc")],
        "",
    )
    .await;
    assert_eq!(r.status, 302);
    let both = format!("{adult}; INPSSESSION=abc; tema=scuro");
    let r = get(&gw, "/servizi", &both).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("cookie"), vec!["tema=scuro".to_string()]);
    // Nor in the spellings servers read as the same name (space before `=`, other case).
    let spelt = format!("{adult}; INPSSESSION =abc; InpsSession=def; tema=scuro");
    let r = get(&gw, "/servizi", &spelt).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("cookie"), vec!["tema=scuro".to_string()]);

    // PIN credentials never reach an upstream, whatever the session or the spelling of
    // the path: Basic on its paths is taken away even with a session; path parameters
    // and trailing slashes do not dodge the detection; the legacy cookie is removed on
    // public routes too; a route's own level binds Basic too.
    let r = request(
        "GET",
        &gw.url("/api/legacy/x"),
        &[API, ("cookie", &adult), ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.echoed("authorization").is_empty());
    let r = request(
        "GET",
        &gw.url("/api/legacy;jsessionid=1/x"),
        &[API, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.echoed("authorization").is_empty());
    assert_eq!(claims(&r)["amr"], "pin");
    for variant in ["/PortaleINPS/login;jsessionid=1", "/PortaleINPS/login/"] {
        let r = form_login(&gw.url(variant), &p.adult, "Sbagliato-9").await;
        assert_eq!(r.json()["error"], "pin_invalid", "{variant}");
    }
    let r = request(
        "GET",
        &gw.url("/pubblico"),
        &[API, ("cookie", "INPSSESSION=abc; tema=chiaro")],
        "",
    )
    .await;
    assert_eq!(r.echoed("cookie"), vec!["tema=chiaro".to_string()]);
    let r = request(
        "GET",
        &gw.url("/api/alto"),
        &[API, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["required_level"], "SpidL2");

    // Issued after the stop, in no category: refused even before the cutoff.
    let r = form_login(&gw.url("/_varco/pin/login"), &p.late, "Tardi-1985").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_not_valid_for_holder");

    // Each exception category on its dedicated route, refused elsewhere.
    let mut sessions = Vec::new();
    for (who, pin, home, elsewhere) in [
        (&p.ward, "Tutela-1970", "/tutela/pratica", "/stranieri"),
        (&p.minor, "Minore-0000", "/minori/assegni", "/servizi"),
    ] {
        let r = form_login(&gw.url("/_varco/pin/login"), who, pin).await;
        assert_eq!(r.status, 303, "{who}: {}", r.text());
        let c = cookie_of(&r);
        assert_eq!(get(&gw, home, &c).await.status, 200, "{who} at {home}");
        let r = get(&gw, elsewhere, &c).await;
        assert_eq!(r.status, 401, "{who} at {elsewhere}");
        assert_eq!(r.json()["error"], "pin_only_for_dedicated_services");
        sessions.push((who.clone(), c, home));
    }

    // The same path on another host's broader route is not the dedicated service.
    let (_, minor, _) = &sessions[1];
    let r = request(
        "GET",
        &gw.url("/minori/assegni"),
        &[API, ("cookie", minor), ("host", "altro.test")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_only_for_dedicated_services");

    // The cutoff passes (a controllable clock): the general PIN session is refused with
    // the page that names SPID, CIE and CNS; new logins too; the chooser drops the PIN.
    gw.advance_days(31);
    let r = get(&gw, "/servizi/x", &adult).await;
    assert_eq!(r.status, 401);
    let j = r.json();
    assert_eq!(j["error"], "pin_no_longer_accepted");
    assert_eq!(
        j["accepted_methods"],
        serde_json::json!(["spid", "cie", "cns"])
    );
    assert!(
        j["login_url"]
            .as_str()
            .unwrap()
            .starts_with("/_varco/login?return=")
    );
    let page = request(
        "GET",
        &gw.url("/servizi/x"),
        &[BROWSER, ("cookie", &adult)],
        "",
    )
    .await;
    assert_eq!(page.status, 401);
    assert!(page.text().contains("SPID, CIE o CNS"));
    assert!(page.text().contains("href=\"/_varco/login?return="));
    let r = form_login(&gw.url("/PortaleINPS/login"), &p.adult, "Adulto-1980").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
    // An exception holder's wrong PIN gets the very same answer: nothing tells who is
    // in the registry.
    let r = form_login(&gw.url("/_varco/pin/login"), &p.ward, "Sbagliato-7").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
    let r = request(
        "GET",
        &gw.url("/api/legacy/x"),
        &[API, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
    let chooser = request("GET", &gw.url("/_varco/login"), &[BROWSER], "").await;
    assert!(
        chooser.text().contains("solo servizi dedicati"),
        "{}",
        chooser.text()
    );
    // The legacy cookie now earns the refusal, and is cleared.
    let r = request(
        "GET",
        &gw.url("/servizi"),
        &[API, ("cookie", "INPSSESSION=abc")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("INPSSESSION=;")
    );
    // In any spelling a server reads as the legacy cookie (issue 11, item 4).
    for spelt in [
        "INPSSESSION =abc",
        "inpssession=abc",
        "x=1;  INPSSESSION\t= abc",
    ] {
        let r = request("GET", &gw.url("/servizi"), &[API, ("cookie", spelt)], "").await;
        assert_eq!(r.status, 401, "{spelt}");
        assert_eq!(r.json()["error"], "pin_no_longer_accepted", "{spelt}");
    }

    // The exception categories keep their dedicated services after the cutoff.
    let (_, ward, home) = &sessions[0];
    assert_eq!(
        get(&gw, home, ward).await.status,
        200,
        "the ward after the cutoff"
    );
    let r = form_login(&gw.url("/_varco/pin/login"), &p.foreigner, "Estero-1990").await;
    assert_eq!(r.status, 303);
    let foreigner = cookie_of(&r);
    assert_eq!(get(&gw, "/stranieri", &foreigner).await.status, 200);
    assert_eq!(
        get(&gw, "/tutela", &foreigner).await.json()["error"],
        "pin_only_for_dedicated_services"
    );

    // The minor turns 18 (ten days from the real today; 31 already passed on the clock:
    // the fiscal code was built so): the session no longer opens the minors' service.
    let (_, minor, _) = &sessions[1];
    let r = get(&gw, "/minori/assegni", minor).await;
    assert_eq!(r.status, 401, "18 already");
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
    let r = form_login(&gw.url("/_varco/pin/login"), &p.minor, "Minore-0000").await;
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minor_is_admitted_until_the_day_before_turning_18() {
    let up = upstreams::echo().await;
    let p = people();
    let gw = InProcess::start(up, &p).await;
    let r = form_login(&gw.url("/_varco/pin/login"), &p.minor, "Minore-0000").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let minor = cookie_of(&r);
    // The 18th birthday is 10 days from today.
    gw.advance_days(9);
    assert_eq!(get(&gw, "/minori", &minor).await.status, 200);
    gw.advance_days(1);
    let r = get(&gw, "/minori", &minor).await;
    assert_eq!(r.status, 401);
    // Before the cutoff, an adult with a PIN issued after the stop.
    assert_eq!(r.json()["error"], "pin_not_valid_for_holder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pins_are_rate_limited_per_fiscal_code_and_per_address() {
    let up = upstreams::echo().await;
    let p = people();
    let gw = InProcess::start(up, &p).await;
    let url = gw.url("/_varco/pin/login");
    for _ in 0..3 {
        assert_eq!(form_login(&url, &p.adult, "Sbagliato-0").await.status, 401);
    }
    // The fourth attempt is refused without a check, even with the right PIN.
    let r = form_login(&url, &p.adult, "Adulto-1980").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "too_many_attempts");
    assert_eq!(r.headers["retry-after"], "600");
    // Basic counts against the same fiscal code.
    let auth = basic(&p.adult, "Adulto-1980");
    let r = request(
        "GET",
        &gw.url("/api/legacy"),
        &[API, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 429);
    // Another fiscal code is fine until the address has made 8 attempts that did not
    // succeed (the refused ones count too: 5 so far; a success is taken back).
    assert_eq!(
        form_login(&url, &p.foreigner, "Estero-1990").await.status,
        303
    );
    for who in [&p.ward, &p.ward, &p.foreigner] {
        assert_eq!(form_login(&url, who, "Sbagliato-0").await.status, 401);
    }
    let r = form_login(&url, &p.minor, "Minore-0000").await;
    assert_eq!(r.status, 429, "{}", r.text());
}

async fn dev_login(gw: &InProcess) -> String {
    let r = request(
        "POST",
        &gw.url("/_varco/dev-login"),
        &[FORM],
        "user=cittadino&return=%2F_varco%2Fpin-telefonico",
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.headers["location"], "/_varco/pin-telefonico");
    cookie_of(&r)
}

/// The page's anti-forgery token and, when one was just generated, the PIN.
fn page_parts(r: &Resp) -> (String, Option<String>) {
    let t = r.text();
    let token = t
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let pin = t
        .split("letter-spacing:.2rem\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .map(str::to_string);
    (token, pin)
}

async fn generate(gw: &InProcess, cookie: &str, lifetime: &str) -> String {
    generate_across(gw, gw, cookie, lifetime).await
}

/// Generates a PIN with the page of `page_gw` posted to `post_gw` (two replicas).
async fn generate_across(
    page_gw: &InProcess,
    post_gw: &InProcess,
    cookie: &str,
    lifetime: &str,
) -> String {
    let page = request(
        "GET",
        &page_gw.url("/_varco/pin-telefonico"),
        &[BROWSER, ("cookie", cookie)],
        "",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let (token, _) = page_parts(&page);
    let r = request(
        "POST",
        &post_gw.url("/_varco/pin-telefonico"),
        &[FORM, BROWSER, ("cookie", cookie)],
        format!("token={token}&action=generate&lifetime={lifetime}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, pin) = page_parts(&r);
    pin.expect("the new PIN is shown once")
}

async fn verify(gw: &InProcess, cf: &str, pin: &str, auth: Option<&str>) -> Resp {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut h = vec![("content-type", "application/json"), API];
    if let Some(b) = &bearer {
        h.push(("authorization", b));
    }
    request(
        "POST",
        &gw.url("/_varco/pin-telefonico/verify"),
        &h,
        serde_json::json!({"fiscal_code": cf, "pin": pin}).to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telephone_pins_live_for_their_lifetime_and_can_be_revoked() {
    let up = upstreams::echo().await;
    let p = people();
    let gw = InProcess::start(up, &p).await;
    const CITIZEN: &str = "RSSMRA80A01H501U";

    // Without a session: the login, coming back to the page.
    let r = request("GET", &gw.url("/_varco/pin-telefonico"), &[BROWSER], "").await;
    assert_eq!(r.status, 302);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .contains("return=%2F_varco%2Fpin-telefonico")
    );
    // Each lifetime: valid up to its last second, not from its end on.
    for (lifetime, days) in [("1d", 1), ("1w", 7), ("1m", 30), ("3m", 90)] {
        let cookie = dev_login(&gw).await;
        let pin = generate(&gw, &cookie, lifetime).await;
        assert_eq!(pin.len(), 8);
        let r = verify(&gw, CITIZEN, &pin, Some(TOKEN)).await;
        assert_eq!(r.json()["valid"], true, "{lifetime}");
        gw.clock.advance(Duration::from_secs(days * DAY - 2));
        assert_eq!(
            verify(&gw, CITIZEN, &pin, Some(TOKEN)).await.json()["valid"],
            true
        );
        gw.clock.advance(Duration::from_secs(2));
        assert_eq!(
            verify(&gw, CITIZEN, &pin, Some(TOKEN)).await.json()["valid"],
            false,
            "{lifetime} expired"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_telephone_pin_per_user_revocable_and_verified_only_by_the_contact_centre() {
    let up = upstreams::echo().await;
    let p = people();
    let gw = InProcess::start(up, &p).await;
    const CITIZEN: &str = "RSSMRA80A01H501U";
    let cookie = dev_login(&gw).await;
    let first = generate(&gw, &cookie, "1w").await;
    let second = generate(&gw, &cookie, "1d").await;
    assert_eq!(
        verify(&gw, CITIZEN, &second, Some(TOKEN)).await.json()["valid"],
        true
    );
    if first != second {
        assert_eq!(
            verify(&gw, CITIZEN, &first, Some(TOKEN)).await.json()["valid"],
            false
        );
    }
    // The page says a PIN is active (never shows it again).
    let page = request(
        "GET",
        &gw.url("/_varco/pin-telefonico"),
        &[BROWSER, ("cookie", &cookie)],
        "",
    )
    .await;
    assert!(page.text().contains("Hai un PIN attivo"));
    assert!(!page.text().contains(&second));

    // The verify endpoint wants the contact centre's credentials.
    for auth in [None, Some("wrong-token-0123456789abcdef0123456789")] {
        let r = verify(&gw, CITIZEN, &second, auth).await;
        assert_eq!(r.status, 401);
        assert!(r.headers.contains_key("www-authenticate"));
    }
    let r = request(
        "GET",
        &gw.url("/_varco/pin-telefonico/verify"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 405);

    // A form without the anti-forgery token changes nothing.
    let r = request(
        "POST",
        &gw.url("/_varco/pin-telefonico"),
        &[FORM, BROWSER, ("cookie", &cookie)],
        "action=revoke",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        verify(&gw, CITIZEN, &second, Some(TOKEN)).await.json()["valid"],
        true
    );

    // Revocation.
    let page = request(
        "GET",
        &gw.url("/_varco/pin-telefonico"),
        &[BROWSER, ("cookie", &cookie)],
        "",
    )
    .await;
    let (token, _) = page_parts(&page);
    let r = request(
        "POST",
        &gw.url("/_varco/pin-telefonico"),
        &[FORM, BROWSER, ("cookie", &cookie)],
        format!("token={token}&action=revoke"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("PIN revocato"));
    assert_eq!(
        verify(&gw, CITIZEN, &second, Some(TOKEN)).await.json()["valid"],
        false
    );

    // Wrong PINs for a fiscal code are rate-limited at the verify endpoint too (the
    // revoked PIN's check above already counts as one failure; a success clears them).
    let pin = generate(&gw, &cookie, "1d").await;
    for _ in 0..2 {
        let wrong = verify(&gw, CITIZEN, "00000000", Some(TOKEN)).await;
        assert_eq!(wrong.json()["valid"], false);
    }
    let r = verify(&gw, CITIZEN, &pin, Some(TOKEN)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "too_many_attempts");

    // A PIN session cannot make a telephone PIN.
    let r = form_login(&gw.url("/_varco/pin/login"), &p.adult, "Adulto-1980").await;
    let pin_session = cookie_of(&r);
    let r = request(
        "GET",
        &gw.url("/_varco/pin-telefonico"),
        &[API, ("cookie", &pin_session)],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "telephone_pin_needs_spid_cie_cns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_logs() {
    let up = upstreams::echo().await;
    let p = people();
    let owned = files(&p);
    let files: Vec<(&str, &str)> = owned.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let text = config(up, std::path::Path::new("@DIR@")).replace(
        "[session]",
        "[log]\nformat = \"json\"\nlevel = \"debug\"\naccess_log = true\n[session]",
    );
    let gw = common::Gateway::start_with(&text, &files);
    let url = |p: &str| gw.url(p);

    let ok = form_login(&url("/PortaleINPS/login"), &p.adult, "Adulto-1980").await;
    assert_eq!(ok.status, 303);
    let session = cookie_of(&ok);
    let bad = form_login(&url("/_varco/pin/login"), &p.ward, "Sbagliato-4242").await;
    assert_eq!(bad.status, 401);
    let refused = form_login(&url("/_varco/pin/login"), &p.late, "Tardi-1985").await;
    assert_eq!(refused.json()["error"], "pin_not_valid_for_holder");
    let basic_ok = basic(&p.foreigner, "Estero-1990");
    let basic_bad = basic(&p.foreigner, "Sbagliato-5353");
    for (auth, status) in [(&basic_ok, 200), (&basic_bad, 401)] {
        let r = request(
            "GET",
            &url("/api/legacy/x"),
            &[API, ("authorization", auth)],
            "",
        )
        .await;
        assert_eq!(r.status, status);
    }
    let r = request(
        "GET",
        &url("/servizi"),
        &[
            API,
            (
                "cookie",
                &format!("{session}; INPSSESSION=legacy-cookie-value-xyz"),
            ),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);

    // The telephone PIN: generated, checked right and wrong.
    let r = request(
        "POST",
        &url("/_varco/dev-login"),
        &[FORM],
        "user=cittadino&return=%2F_varco%2Fpin-telefonico",
    )
    .await;
    let spid = cookie_of(&r);
    let page = request(
        "GET",
        &url("/_varco/pin-telefonico"),
        &[BROWSER, ("cookie", &spid)],
        "",
    )
    .await;
    let (token, _) = page_parts(&page);
    let r = request(
        "POST",
        &url("/_varco/pin-telefonico"),
        &[FORM, BROWSER, ("cookie", &spid)],
        format!("token={token}&action=generate&lifetime=1w"),
    )
    .await;
    let (_, tel) = page_parts(&r);
    let tel = tel.unwrap();
    for pin in [tel.as_str(), "99999999"] {
        let r = request(
            "POST",
            &url("/_varco/pin-telefonico/verify"),
            &[API, ("authorization", &format!("Bearer {TOKEN}"))],
            serde_json::json!({"fiscal_code": "RSSMRA80A01H501U", "pin": pin}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200);
    }

    // Metrics count attempts by kind and outcome, and carry nothing else.
    let metrics = request("GET", &url("/_varco/metrics"), &[], "")
        .await
        .text();
    for line in [
        "varco_pin_attempts_total{kind=\"form\",outcome=\"ok\"} 1",
        "varco_pin_attempts_total{kind=\"form\",outcome=\"wrong\"} 1",
        "varco_pin_attempts_total{kind=\"basic\",outcome=\"ok\"} 1",
        "varco_pin_attempts_total{kind=\"telephone\",outcome=\"wrong\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(!metrics.contains(tel.as_str()) && !metrics.contains("Adulto-1980"));

    let events = [
        "pin_login_failed",
        "pin_refused",
        "telephone_pin_generated",
        "telephone_pin_checked",
    ];
    for e in events {
        assert!(
            gw.wait_log(|l| l.contains(&format!("\"event\":\"{e}\"")))
                .is_some(),
            "no {e} audit line"
        );
    }
    let logs = gw.logs().join("\n");
    let session_value = session.split('=').nth(1).unwrap();
    let spid_value = spid.split('=').nth(1).unwrap();
    for secret in [
        "Adulto-1980",
        "Sbagliato-4242",
        "Tardi-1985",
        "Estero-1990",
        "Sbagliato-5353",
        basic_ok.trim_start_matches("Basic "),
        basic_bad.trim_start_matches("Basic "),
        tel.as_str(),
        TOKEN,
        "legacy-cookie-value-xyz",
        session_value,
        spid_value,
        token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}

/// A legacy verifier and exception registry over HTTP, as the legacy backend would run them:
/// the right PIN of every fiscal code is `Giusto-1`, except `down` ones (500). Counts the
/// verifier's requests; the registry answers 500 while `registry_down` is set.
struct Legacy {
    addr: SocketAddr,
    verifier_calls: Arc<std::sync::atomic::AtomicUsize>,
    registry_down: Arc<std::sync::atomic::AtomicBool>,
}

async fn legacy_backend(ward: String, issued: Date) -> Legacy {
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::Ordering;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, d) = (calls.clone(), down.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let (c, d, ward) = (c.clone(), d.clone(), ward.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let (c, d, ward) = (c.clone(), d.clone(), ward.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let (status, body) = if path == "/verify" {
                                c.fetch_add(1, Ordering::SeqCst);
                                let b = req.into_body().collect().await.unwrap().to_bytes();
                                let ask: serde_json::Value = serde_json::from_slice(&b).unwrap();
                                if ask["pin"] == "Guasto-1" {
                                    (500, "{}".to_string())
                                } else if ask["pin"] == "Giusto-1" {
                                    (200, serde_json::json!({"valid": true, "issued": issued.to_string(), "given_name": "MARIO", "family_name": "ROSSI"}).to_string())
                                } else {
                                    (200, "{\"valid\":false}".to_string())
                                }
                            } else if path == "/vecchio" {
                                let mut r =
                                    http::Response::new(Full::new(bytes::Bytes::from("ok")));
                                r.headers_mut().append(
                                    "set-cookie",
                                    http::HeaderValue::from_static("INPSSESSION=rinnovata; Path=/"),
                                );
                                // Spellings a browser stores as the same cookie (issue 11).
                                r.headers_mut().append(
                                    "set-cookie",
                                    http::HeaderValue::from_static("INPSSESSION =spazio; Path=/"),
                                );
                                r.headers_mut().append(
                                    "set-cookie",
                                    http::HeaderValue::from_static("inpssession=minuscolo"),
                                );
                                r.headers_mut().append(
                                    "set-cookie",
                                    http::HeaderValue::from_static("tema=scuro; Path=/"),
                                );
                                return Ok::<_, std::convert::Infallible>(r);
                            } else if let Some(cf) = path.strip_prefix("/eccezioni/") {
                                if d.load(Ordering::SeqCst) {
                                    (500, "{}".to_string())
                                } else if cf == ward {
                                    (200, "[\"guardianship\"]".to_string())
                                } else {
                                    (404, "[]".to_string())
                                }
                            } else {
                                (404, String::new())
                            };
                            let mut r = http::Response::new(Full::new(bytes::Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Legacy {
        addr,
        verifier_calls: calls,
        registry_down: down,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_verifier_and_registry_over_http() {
    use std::sync::atomic::Ordering;
    let up = upstreams::echo().await;
    let p = people();
    let legacy = legacy_backend(p.ward.clone(), days_from_today(-400)).await;
    let at = legacy.addr;
    let gw = InProcess::start_with(up, &p, |c| {
        let c = c
            .lines()
            .map(|l| {
                if l.starts_with("verifier_file") {
                    format!("verifier_url = \"http://{at}/verify\"")
                } else if l.starts_with("file = ") {
                    format!("url = \"http://{at}/eccezioni/{{fiscal_code}}\"\ncache_ttl = \"1s\"")
                } else if l == "[pin]" {
                    "[[route]]\npath = \"/vecchio\"\nupstream = \"legacy\"\npublic = true\n[pin]"
                        .to_string()
                } else if l == "[upstream.app]" {
                    format!("[upstream.legacy]\nurl = \"http://{at}\"\n[upstream.app]")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>();
        c.join("\n")
    })
    .await;
    let login = gw.url("/_varco/pin/login");

    // The legacy backend cannot set its legacy session cookie through the gateway.
    let r = request("GET", &gw.url("/vecchio"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, vec!["tema=scuro; Path=/"]);

    // The right PIN: a session with the verifier's names.
    let r = form_login(&login, &p.adult, "Giusto-1").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = get(&gw, "/servizi", &cookie_of(&r)).await;
    let c = claims(&r);
    assert_eq!(
        (c["amr"].as_str(), c["family_name"].as_str()),
        (Some("pin"), Some("ROSSI"))
    );
    // A wrong one; a verifier failure is a 503 that lets nobody in.
    assert_eq!(
        form_login(&login, &p.adult, "Sbagliato-1").await.json()["error"],
        "pin_invalid"
    );
    let r = form_login(&login, &p.foreigner, "Guasto-1").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.get("set-cookie").is_none());
    // The registry down: 503 too; back up: the ward's category comes from it.
    legacy.registry_down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = form_login(&login, &p.ward, "Giusto-1").await;
    assert_eq!(r.status, 503);
    legacy.registry_down.store(false, Ordering::SeqCst);
    let r = form_login(&login, &p.ward, "Giusto-1").await;
    assert_eq!(r.status, 303);

    // After the cutoff a holder in no category is refused without asking the verifier.
    gw.advance_days(31);
    let before = legacy.verifier_calls.load(Ordering::SeqCst);
    let r = form_login(&login, &p.adult, "Giusto-1").await;
    assert_eq!(r.json()["error"], "pin_no_longer_accepted");
    assert_eq!(legacy.verifier_calls.load(Ordering::SeqCst), before);
}

/// The telephone-PIN verify endpoint over TLS: the contact centre's client certificate
/// (verified by the listener) is enough; another certificate is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_centre_may_verify_with_its_client_certificate() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let up = upstreams::echo().await;
    let p = people();
    let server_ca = varco::demo::certs::DevCa::new("server CA (TEST ONLY)").unwrap();
    let server = server_ca.server(&["localhost"]).unwrap();
    let clients = varco::demo::certs::DevCa::new("clients CA (TEST ONLY)").unwrap();
    let centre = clients.client("contact-centre.test").unwrap();
    let stranger = clients.client("someone-else.test").unwrap();
    // Another authority the listener also trusts (as CNS authorities would be) issues a
    // certificate with the contact centre's name: verify_client_ca refuses it.
    let cards = varco::demo::certs::DevCa::new("card CA (TEST ONLY)").unwrap();
    let impostor = cards.client("contact-centre.test").unwrap();
    let owned = files(&p);
    let mut files: Vec<(&str, &str)> = owned.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let ca_pem = clients.cert_pem();
    let both = format!("{ca_pem}{}", cards.cert_pem());
    files.extend([
        ("server.pem", server.cert_pem.as_str()),
        ("server-key.pem", server.key_pem.as_str()),
        ("clients-ca.pem", both.as_str()),
        ("centre-ca.pem", ca_pem.as_str()),
    ]);
    let text = config(up, std::path::Path::new("@DIR@"))
        .replace(
            "address = \"127.0.0.1:0\"",
            "address = \"127.0.0.1:0\"\n[server.listener.tls]\ncert = \"@DIR@/server.pem\"\nkey = \"@DIR@/server-key.pem\"\nclient_ca = \"@DIR@/clients-ca.pem\"",
        )
        .replace(
            &format!("verify_tokens = [\"{TOKEN}\"]"),
            "verify_clients = [\"contact-centre.test\"]\nverify_client_ca = \"@DIR@/centre-ca.pem\"",
        );
    let gw = common::Gateway::start_with(&text, &files);

    let post = |client: Option<&varco::demo::certs::Issued>| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(server_ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cfg = match client {
            Some(c) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let addr = gw.addr();
        async move {
            use http_body_util::{BodyExt, Full};
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = http::Request::post("/_varco/pin-telefonico/verify")
                .header("host", "localhost")
                .header("accept", "application/json")
                .body(Full::new(bytes::Bytes::from(
                    serde_json::json!({"fiscal_code": "RSSMRA80A01H501U", "pin": "12345678"})
                        .to_string(),
                )))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = post(Some(&centre)).await;
    assert_eq!((status, body.as_str()), (200, "{\"valid\":false}"));
    assert_eq!(post(Some(&stranger)).await.0, 401);
    assert_eq!(post(Some(&impostor)).await.0, 401);
    assert_eq!(post(None).await.0, 401);
}

/// Behind a trusted proxy the per-address limit counts the client address the proxy
/// reports (the last `X-Forwarded-For` entry), not the proxy's own: one client's failures
/// do not lock out the others behind the same ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_limit_is_per_client() {
    let up = upstreams::echo().await;
    let p = people();
    let gw = InProcess::start_with(up, &p, |c| {
        c.replacen(
            "[[server.listener]]",
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[[server.listener]]",
            1,
        )
    })
    .await;
    let url = gw.url("/_varco/pin/login");
    let from = |client: &'static str, who: String, pin: &'static str| {
        let url = url.clone();
        async move {
            let body = format!("codice_fiscale={who}&pin={pin}");
            request(
                "POST",
                &url,
                &[FORM, API, ("x-forwarded-for", client)],
                body,
            )
            .await
            .status
        }
    };
    // 8 failed attempts from one client (never 3 on one fiscal code).
    for who in [
        &p.adult,
        &p.adult,
        &p.ward,
        &p.ward,
        &p.foreigner,
        &p.foreigner,
        &p.minor,
        &p.minor,
    ] {
        assert_eq!(from("203.0.113.1", who.clone(), "Sbagliato-0").await, 401);
    }
    assert_eq!(from("203.0.113.1", p.late.clone(), "Tardi-1985").await, 429);
    // Another client behind the same proxy is not affected.
    assert_eq!(
        from("198.51.100.7", p.foreigner.clone(), "Estero-1990").await,
        303
    );
    // Malformed input counts against its sender's address alone (issue 11, item 1):
    // one client's garbage does not get other clients refused.
    for _ in 0..8 {
        assert_eq!(from("192.0.2.50", "NONUNCODICE".into(), "x").await, 401);
    }
    assert_eq!(from("192.0.2.50", "NONUNCODICE".into(), "x").await, 429);
    for client in ["192.0.2.51", "192.0.2.52", "192.0.2.53", "192.0.2.54"] {
        assert_eq!(
            from(client, "NONUNCODICE".into(), "x").await,
            401,
            "{client}"
        );
    }
    // Only the proxy's own (last) entry names the client, with a port as some proxies
    // write it (found by a review): the client's earlier entries never make it a new one.
    let spoofing = [
        "9.9.9.1, 198.51.100.99:4711",
        "9.9.9.2, 198.51.100.99:4712",
        "9.9.9.3, [::ffff:198.51.100.99]:1",
        "9.9.9.4, 198.51.100.99",
        "9.9.9.5, 198.51.100.99",
        "9.9.9.6, 198.51.100.99",
        "9.9.9.7, 198.51.100.99",
        "9.9.9.8, 198.51.100.99",
    ];
    for xff in spoofing {
        assert_eq!(from(xff, "NONUNCODICE".into(), "x").await, 401, "{xff}");
    }
    assert_eq!(
        from("9.9.9.9, 198.51.100.99:9", "NONUNCODICE".into(), "x").await,
        429
    );
}

/// The PIN configuration with the replicas' state in the Redis on `port`.
fn in_redis(port: u16) -> impl Fn(String) -> String {
    move |c: String| {
        c.replace("[session]\n", "[session]\nstore = \"redis\"\n")
            + &format!(
                "[session.redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"pin:\"\ncommand_timeout = \"300ms\"\nconnect_timeout = \"300ms\"\n"
            )
    }
}

/// Two replicas sharing a real `redis-server`: PIN failures counted on one count on the
/// other, a telephone PIN made on one is checked (and revoked) on the other at once, the
/// page's form may be posted to either, and without Redis the PIN paths fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_pin_limits_and_telephone_pins_through_redis() {
    let mut redis = Redis::start(free_port());
    let up = upstreams::echo().await;
    let p = people();
    let a = InProcess::start_with(up, &p, in_redis(redis.port)).await;
    let b = InProcess::start_with(up, &p, in_redis(redis.port)).await;
    const CITIZEN: &str = "RSSMRA80A01H501U";

    // Wrong PINs on A and B count against one fiscal code (3 allowed): the fourth
    // attempt, on B with the right PIN, is refused.
    let (on_a, on_b) = (a.url("/_varco/pin/login"), b.url("/_varco/pin/login"));
    for url in [&on_a, &on_b, &on_a] {
        assert_eq!(form_login(url, &p.adult, "Sbagliato-0").await.status, 401);
    }
    let r = form_login(&on_b, &p.adult, "Adulto-1980").await;
    assert_eq!(r.status, 429, "{}", r.text());
    // A success on B clears the count of another fiscal code on A too.
    assert_eq!(
        form_login(&on_a, &p.foreigner, "Sbagliato-0").await.status,
        401
    );
    assert_eq!(
        form_login(&on_b, &p.foreigner, "Estero-1990").await.status,
        303
    );
    for url in [&on_a, &on_b] {
        assert_eq!(
            form_login(url, &p.foreigner, "Sbagliato-0").await.status,
            401
        );
    }
    assert_eq!(
        form_login(&on_a, &p.foreigner, "Estero-1990").await.status,
        303
    );

    // A telephone PIN generated with A's page posted to B is valid on A.
    let cookie = dev_login(&a).await;
    let pin = generate_across(&a, &b, &cookie, "1w").await;
    assert_eq!(
        verify(&a, CITIZEN, &pin, Some(TOKEN)).await.json()["valid"],
        true
    );
    // Revoked on B: refused on A at once.
    let page = request(
        "GET",
        &b.url("/_varco/pin-telefonico"),
        &[BROWSER, ("cookie", &cookie)],
        "",
    )
    .await;
    assert!(page.text().contains("Revoca il PIN"), "{}", page.text());
    let (token, _) = page_parts(&page);
    let r = request(
        "POST",
        &b.url("/_varco/pin-telefonico"),
        &[FORM, BROWSER, ("cookie", &cookie)],
        format!("token={token}&action=revoke"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        verify(&a, CITIZEN, &pin, Some(TOKEN)).await.json()["valid"],
        false
    );
    // The contact centre's wrong checks on both count against the fiscal code: after 3
    // (one above), the next is refused on either replica.
    assert_eq!(
        verify(&b, CITIZEN, "00000000", Some(TOKEN)).await.json()["valid"],
        false
    );
    assert_eq!(
        verify(&a, CITIZEN, "00000001", Some(TOKEN)).await.json()["valid"],
        false
    );
    assert_eq!(
        verify(&b, CITIZEN, "00000002", Some(TOKEN)).await.status,
        429
    );
    assert_eq!(
        verify(&a, CITIZEN, "00000003", Some(TOKEN)).await.status,
        429
    );
    // Nothing personal in Redis's key names.
    let keys = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--scan",
            "--pattern",
            "pin:*",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.contains("pin:l:") && keys.contains("pin:k:telephone-form"),
        "{keys}"
    );
    assert!(
        !keys.contains(CITIZEN) && !keys.contains(&p.adult),
        "{keys}"
    );

    // Redis gone: the PIN login and the contact centre's check fail closed (503).
    redis.stop();
    let r = form_login(&on_a, &p.ward, "Tutela-1970").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(verify(&b, CITIZEN, &pin, Some(TOKEN)).await.status, 503);
}
