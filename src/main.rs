//! The `varco` command line: `serve`, `check-config`, `demo`, `echo`.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use varco::config::{Config, ConfigError, Mode};

// jemalloc, with its background threads returning freed pages to the system after a few
// seconds: under glibc's malloc the resident memory kept what each load had spread over its
// arenas (10 minutes of mixed load: +15% that never came back; jemalloc: +3%, and a third
// less memory overall; bench/soak.sh). Only the binary: the library leaves the choice to
// whoever embeds it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "varco", version, about = "Identity gateway for SPID, CIE and CNS", long_about = None)]
struct Cli {
    /// Human-readable logs instead of JSON.
    #[arg(long, global = true)]
    pretty: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. SIGHUP reloads the configuration file (and the files it names).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Also reload when the configuration file's content changes (checked every 2 s;
        /// a Kubernetes ConfigMap update is seen this way).
        #[arg(long)]
        watch: bool,
    },
    /// Validate a configuration file and print every problem with the key that causes it.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the embedded default: gateway + echo upstream on https://localhost:8443.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where development certificates are kept (created on first run).
        #[arg(long, default_value = "certs/dev")]
        certs_dir: PathBuf,
        /// A demo configuration file instead of the embedded one (must say `mode = "demo"`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Verify an identity header the way a backend must: signature against the gateway's
    /// JWKS, expiry, audience, issuer and (optionally) the request binding. Prints the
    /// claims, or the reason it is refused (exit 1).
    Verify(VerifyArgs),
    /// SAML service-provider tools.
    #[command(subcommand)]
    Saml(SamlCommand),
    /// OpenID Connect relying-party tools.
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// Ask the gateway on this host whether it is alive: exit 0 on a 200 answer, 1 otherwise
    /// (for a container's HEALTHCHECK; loopback URLs only, the certificate is not checked).
    Healthcheck {
        /// The health endpoint (use `/_varco/readyz` for readiness).
        #[arg(
            long,
            env = "VARCO_HEALTHCHECK_URL",
            default_value = "https://127.0.0.1:8443/_varco/healthz"
        )]
        url: String,
        /// Time allowed for the whole exchange.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Run only the echo upstream (for benchmarks and experiments).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Verify every request's identity header against this JWKS URL, like a backend,
        /// and count verified and refused requests (`GET /_echo/counts`).
        #[arg(long)]
        jwks: Option<String>,
        /// With --jwks: this upstream's id (`aud`).
        #[arg(long, default_value = "echo")]
        aud: String,
        /// With --jwks: the gateway's issuer (`iss`).
        #[arg(long)]
        iss: Option<String>,
        /// With --jwks: the identity header's name.
        #[arg(long, default_value = "x-varco-assertion")]
        header: String,
        /// Answer every request with this many bytes (text/plain, "varco echo...")
        /// instead of the page describing it: a load test's upstream, whose work does not
        /// grow with the headers the proxy adds. At most 16 MiB.
        #[arg(long, value_name = "BYTES",
              value_parser = clap::value_parser!(u32).range(0..=16 * 1024 * 1024))]
        fixed_body_bytes: Option<u32>,
    },
}

#[derive(Subcommand)]
enum SamlCommand {
    /// Write our SAML signing key (RSA-3072), a self-signed certificate and a CSR with the
    /// profile of AgID's Avviso SPID n.29 v3 (saml-sp-key.pem, saml-sp.pem, saml-sp.csr).
    Certificate(CertificateArgs),
    /// Print our signed SP metadata (SPID or CIE extensions, by the federation's profile).
    Metadata {
        #[arg(long, short)]
        config: PathBuf,
        /// The federation (default: the first one in `[[saml.federation]]`).
        #[arg(long)]
        federation: Option<String>,
    },
}

#[derive(Subcommand)]
enum OidcCommand {
    /// Print our signed Entity Configuration (the OpenID Federation document served at
    /// `/.well-known/openid-federation`), for registration with the federation.
    EntityConfiguration {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the decoded claims (JSON) instead of the signed JWT.
        #[arg(long)]
        decoded: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config, watch } => match Config::load(&config) {
            Ok(cfg) => run(cfg, cli.pretty, None, Some((config, watch))),
            Err(e) => fail_config(e),
        },
        Command::Demo {
            listen,
            certs_dir,
            config,
        } => demo(listen, certs_dir, config, cli.pretty),
        Command::Verify(args) => verify(args),
        Command::Saml(SamlCommand::Certificate(args)) => saml_certificate(args),
        Command::Saml(SamlCommand::Metadata { config, federation }) => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail_config(e),
            };
            let Some(saml) = &cfg.saml else {
                eprintln!("varco saml metadata: the configuration has no [saml] section");
                return ExitCode::from(2);
            };
            match varco::saml::sp::sp_metadata_for(
                saml,
                &cfg.server.reserved_prefix,
                federation.as_deref(),
            ) {
                Ok(xml) => {
                    println!("{xml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("varco saml metadata: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Oidc(OidcCommand::EntityConfiguration { config, decoded }) => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail_config(e),
            };
            let Some(oidc) = &cfg.oidc else {
                eprintln!(
                    "varco oidc entity-configuration: the configuration has no [oidc] section"
                );
                return ExitCode::from(2);
            };
            let clock = std::sync::Arc::new(varco::session::SystemClock::default());
            let rp = match varco::oidc::provider::RelyingParty::load(
                oidc,
                &cfg.server.reserved_prefix,
                clock.clone(),
            ) {
                Ok(rp) => rp,
                Err(e) => {
                    eprintln!("varco oidc entity-configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            use varco::session::Clock as _;
            match rp.entity_configuration(clock.now()) {
                None => {
                    eprintln!(
                        "varco oidc entity-configuration: the configuration has no [oidc.federation]"
                    );
                    ExitCode::from(2)
                }
                Some(Err(e)) => {
                    eprintln!("varco oidc entity-configuration: {e}");
                    ExitCode::FAILURE
                }
                Some(Ok(jwt)) if decoded => {
                    use base64::Engine as _;
                    let payload = jwt.split('.').nth(1).unwrap_or_default();
                    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(payload)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                        .unwrap_or_default();
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Some(Ok(jwt)) => {
                    println!("{jwt}");
                    ExitCode::SUCCESS
                }
            }
        }
        Command::Healthcheck { url, timeout } => match varco::healthcheck::check(&url, timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("varco healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Echo {
            listen,
            jwks,
            aud,
            iss,
            header,
            fixed_body_bytes,
        } => runtime().map_or(ExitCode::FAILURE, |rt| {
            rt.block_on(async {
                let verifier = jwks.map(|url| {
                    std::sync::Arc::new(varco::demo::echo::Verifier::new(
                        url, None, aud, header, iss,
                    ))
                });
                match varco::demo::echo::spawn_with(
                    listen,
                    verifier,
                    fixed_body_bytes.map(|n| n as usize),
                )
                .await
                {
                    Ok(addr) => {
                        eprintln!("echo upstream on http://{addr}");
                        let _ = tokio::signal::ctrl_c().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("varco echo: cannot listen on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("varco: cannot start the runtime: {e}");
            None
        }
    }
}

fn fail_config(e: ConfigError) -> ExitCode {
    eprintln!("varco: invalid configuration\n{e}");
    ExitCode::from(2)
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load_unvalidated(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut lines: Vec<String> = cfg.validate().iter().map(|p| p.to_string()).collect();
    if lines.is_empty() {
        lines = varco::app::deep_check(&cfg);
    }
    if lines.is_empty() {
        println!("{}: configuration OK", path.display());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {} problem(s):", path.display(), lines.len());
        for l in lines {
            eprintln!("  - {l}");
        }
        ExitCode::FAILURE
    }
}

/// Runs the gateway; with `reload` (the configuration file and whether to watch it),
/// SIGHUP (and the watch) reload it.
fn run(
    cfg: Config,
    pretty: bool,
    banner: Option<String>,
    reload: Option<(PathBuf, bool)>,
) -> ExitCode {
    let _log = varco::telemetry::init_logging(&cfg.log, pretty);
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        match varco::app::start(cfg).await {
            Ok(running) => {
                if let Some(b) = banner {
                    eprintln!("{b}");
                }
                if let Some((path, watch)) = reload {
                    running.reloader.set_path(path);
                    running
                        .reloader
                        .spawn_triggers(watch.then_some(std::time::Duration::from_secs(2)));
                }
                running.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("varco: cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn demo(listen: SocketAddr, certs_dir: PathBuf, config: Option<PathBuf>, pretty: bool) -> ExitCode {
    let tls = match varco::demo::certs::ensure_dev_tls(&certs_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("varco demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    // The echo upstream checks identity headers like a backend: against the gateway's JWKS.
    let echo = rt.block_on(varco::demo::spawn_verifying_echo(
        listen,
        &tls,
        "x-varco-assertion",
        "https://localhost/varco-demo",
    ));
    let echo = match echo {
        Ok(a) => a,
        Err(e) => {
            eprintln!("varco demo: cannot start the echo upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let saml = match varco::demo::certs::ensure_dev_saml(&certs_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("varco demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cns = match varco::demo::ensure_dev_cns(&certs_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("varco demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let idps = match rt.block_on(varco::demo::spawn_dev_idp(listen, &saml, &certs_dir)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("varco demo: cannot start the development IdPs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (idp, idp_metadata) = (idps.spid.0, idps.spid.1.clone());
    let (op_issuer, op_secret) = match rt.block_on(varco::demo::spawn_dev_op(listen, &certs_dir)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("varco demo: cannot start the development OP: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = match config {
        Some(path) => Config::load(&path),
        None => varco::demo::demo_config(
            listen,
            echo,
            &tls,
            &saml,
            &varco::demo::DevProviders {
                idp_metadata: &idp_metadata,
                cie_metadata: &idps.cie.1,
                cns: &cns,
                op_issuer: &op_issuer,
                op_secret: &op_secret,
            },
        ),
    };
    let cfg = match cfg {
        Ok(c) if c.mode == Mode::Demo => c,
        Ok(_) => {
            eprintln!("varco demo: the configuration must say mode = \"demo\"");
            return ExitCode::from(2);
        }
        Err(e) => return fail_config(e),
    };
    let _log = varco::telemetry::init_logging(&cfg.log, pretty);
    let banner = format!(
        "\nvarco demo is running: open https://localhost:{}/ (development certificate: {})\n\
         Log in with SPID through the development IdP (http://{idp}, test users, real signed\n\
         SAML messages), with CIE through the development CIE IdP (http://{cie}), with OpenID\n\
         Connect through the development OP ({op_issuer}), or the development login; the echo\n\
         upstream shows the identity header\n\
         it verified. Public page: /pubblico; SpidL3 step-up: /riservato. Echo upstream on\n\
         http://{echo}; metrics at /_varco/metrics. Ctrl-C to stop.\n\
         CNS cards (development only): {cards}\n",
        listen.port(),
        tls.ca.display(),
        cie = idps.cie.0,
        cards = cns_banner(&cns, listen.port()),
    );
    rt.block_on(async move {
        match varco::app::start(cfg).await {
            Ok(running) => {
                eprintln!("{banner}");
                running.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("varco demo: cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// How to use the demo's CNS cards: the `.p12` files (with their password) for a browser,
/// or curl with the PEM files.
fn cns_banner(cns: &varco::demo::certs::DevCnsFiles, port: u16) -> String {
    let p12 = |c: &varco::demo::certs::CardFiles| {
        if c.p12.is_file() {
            c.p12.display().to_string()
        } else {
            "(no .p12: openssl is not installed)".into()
        }
    };
    format!(
        "valid {} (Mario Rossi), revoked {} (Giulia Bianchi), password {};\n\
         or curl --cacert {} --cert {} --key {} https://localhost:{port}/_varco/cns/login",
        p12(&cns.valid),
        p12(&cns.revoked),
        cns.p12_password,
        cns.ca.display().to_string().replace("cns-ca.pem", "ca.pem"),
        cns.valid.cert.display(),
        cns.valid.key.display(),
    )
}

#[derive(clap::Args)]
struct CertificateArgs {
    /// A public administration (IPA code) or a private service provider (VAT number or
    /// fiscal code).
    #[arg(long, value_enum)]
    kind: varco::saml::certificate::Sector,
    /// Public SPs: the IPA code (organizationIdentifier PA:IT-<code>).
    #[arg(long)]
    ipa_code: Option<String>,
    /// Private SPs: the VAT number (VATIT-<11 digits>) ...
    #[arg(long)]
    vat_number: Option<String>,
    /// ... or the fiscal code (CF:IT-<16 characters, or an organization's 11 digits>).
    #[arg(long)]
    fiscal_code: Option<String>,
    /// organizationName: the organization's name.
    #[arg(long)]
    org_name: String,
    /// commonName (default: the organization's name).
    #[arg(long)]
    common_name: Option<String>,
    /// uri: our SAML entityID (`saml.entity_id`).
    #[arg(long)]
    entity_id: String,
    /// localityName: the municipality of the registered office.
    #[arg(long)]
    locality: String,
    /// Validity of the self-signed certificate.
    #[arg(long, default_value_t = 730)]
    days: u32,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

/// `varco saml certificate`.
fn saml_certificate(a: CertificateArgs) -> ExitCode {
    use varco::saml::certificate::{Subject, generate, organization_identifier};
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("varco saml certificate: {e}");
        ExitCode::FAILURE
    };
    let org_id = match organization_identifier(
        a.kind,
        a.ipa_code.as_deref(),
        a.vat_number.as_deref(),
        a.fiscal_code.as_deref(),
    ) {
        Ok(id) => id,
        Err(e) => return fail(&e),
    };
    let files = [
        a.out_dir.join("saml-sp-key.pem"),
        a.out_dir.join("saml-sp.pem"),
        a.out_dir.join("saml-sp.csr"),
    ];
    if !a.force
        && let Some(f) = files.iter().find(|f| f.exists())
    {
        return fail(&format!("{} exists (--force replaces it)", f.display()));
    }
    let generated = match generate(&Subject {
        sector: a.kind,
        organization_identifier: org_id.clone(),
        common_name: a.common_name.unwrap_or_else(|| a.org_name.clone()),
        organization_name: a.org_name,
        entity_id: a.entity_id,
        locality: a.locality,
        days: a.days,
    }) {
        Ok(g) => g,
        Err(e) => return fail(&e),
    };
    if let Err(e) = std::fs::create_dir_all(&a.out_dir) {
        return fail(&e);
    }
    // Each file is written new beside its place (the key readable by its owner alone,
    // whatever an older file's mode), then all three are renamed into place: a link is
    // replaced, never followed, and a failure leaves the old files as they were.
    let mut written = Vec::new();
    for (path, text, private) in [
        (&files[0], &generated.key_pem, true),
        (&files[1], &generated.cert_pem, false),
        (&files[2], &generated.csr_pem, false),
    ] {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.new-{}", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let made = opts
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            for (t, _) in &written {
                let _ = std::fs::remove_file(t);
            }
            return fail(&format!("{}: {e}", tmp.display()));
        }
        written.push((tmp, path));
    }
    for (tmp, path) in &written {
        if let Err(e) = std::fs::rename(tmp, path) {
            return fail(&format!("{}: {e}", path.display()));
        }
    }
    println!(
        "wrote {} (keep it secret), {} and {} ({org_id}); set saml.key and saml.cert to them",
        files[0].display(),
        files[1].display(),
        files[2].display()
    );
    ExitCode::SUCCESS
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// JWKS location: an http(s) URL (e.g. https://gw/_varco/jwks.json) or a file.
    #[arg(long)]
    jwks: String,
    /// The upstream id the header must be addressed to (`aud`).
    #[arg(long)]
    aud: String,
    /// The gateway's issuer (`iss`); any issuer when omitted.
    #[arg(long)]
    iss: Option<String>,
    /// The HTTP method the request used (`htm`).
    #[arg(long)]
    method: Option<String>,
    /// The URL the backend received (`htu`): the scheme it accepted, its Host header, its
    /// request target (docs/backend-verification.md).
    #[arg(long)]
    url: Option<String>,
    /// CA bundle for an https JWKS URL (default: public web roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Allowed clock difference in seconds.
    #[arg(long, default_value_t = 5)]
    leeway: u64,
    /// The header value; read from standard input when omitted.
    token: Option<String>,
}

fn verify(a: VerifyArgs) -> ExitCode {
    use std::io::Read as _;
    use varco::assertion::verify::{Expected, parse_jwks, verify};
    let token = match a.token {
        Some(t) => t,
        None => {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_err() {
                eprintln!("varco verify: cannot read the header from standard input");
                return ExitCode::FAILURE;
            }
            s
        }
    };
    // Accept the value alone or a whole `X-Varco-Assertion: ...` line.
    let token = token.trim();
    let token = token.rsplit_once(':').map_or(token, |(_, v)| v).trim();
    let jwks_bytes = if a.jwks.starts_with("http://") || a.jwks.starts_with("https://") {
        let Some(rt) = runtime() else {
            return ExitCode::FAILURE;
        };
        match rt.block_on(varco::assertion::fetch::get(&a.jwks, a.ca.as_deref())) {
            Ok(b) => b.to_vec(),
            Err(e) => {
                eprintln!("varco verify: JWKS {}: {e}", a.jwks);
                return ExitCode::FAILURE;
            }
        }
    } else {
        match std::fs::read(&a.jwks) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("varco verify: JWKS file {}: {e}", a.jwks);
                return ExitCode::FAILURE;
            }
        }
    };
    let jwks = match parse_jwks(&jwks_bytes) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("varco verify: {e}");
            return ExitCode::FAILURE;
        }
    };
    let expected = Expected {
        audience: &a.aud,
        issuer: a.iss.as_deref(),
        method: a.method.as_deref(),
        url: a.url.as_deref(),
        leeway: a.leeway,
    };
    match verify(token, &jwks, &expected) {
        Ok(claims) => {
            // The claims, and what the header is bound to (request or session).
            let mut v = serde_json::to_value(&claims).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("binding".into(), claims.binding().into());
            }
            match serde_json::to_string_pretty(&v) {
                Ok(text) => println!("{text}"),
                Err(_) => println!("valid"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            ExitCode::FAILURE
        }
    }
}
