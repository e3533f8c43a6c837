//! The embedded default, `varco demo`: development TLS certificates (generated into
//! `certs/dev/` on first run), an in-process echo upstream that answers with the request it
//! received, and the gateway in front of it on `https://localhost:8443`. The demo
//! configuration says `mode = "demo"`; development-only pieces are refused in any other mode.

pub mod certs;
pub mod echo;
pub mod idp;
pub mod op;
pub mod users;

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, ConfigError, Mode};

/// Starts the echo upstream for the demo, verifying identity headers against the gateway
/// that will listen on `gateway`.
pub async fn spawn_verifying_echo(
    gateway: SocketAddr,
    tls: &certs::DevTlsFiles,
    header: &str,
    issuer: &str,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let local = listener.local_addr()?;
    let verifier = echo::Verifier::new(
        format!("https://localhost:{}/_varco/jwks.json", gateway.port()),
        Some(tls.ca.clone()),
        "echo".into(),
        header.into(),
        Some(issuer.into()),
    );
    tokio::spawn(echo::serve(listener, Some(std::sync::Arc::new(verifier))));
    Ok(local)
}

/// The demo's SP entityID and where the development IdP answers (for the gateway on
/// `listen`).
pub const DEMO_SP_ENTITY_ID: &str = "https://localhost/varco-demo/sp";

/// The demo's development IdPs: where each listens and its metadata file.
pub struct DevIdps {
    pub spid: (SocketAddr, std::path::PathBuf),
    pub cie: (SocketAddr, std::path::PathBuf),
}

/// Starts the development IdPs (SPID and CIE profiles) for a gateway on `listen` and
/// writes their metadata into `certs_dir`.
pub async fn spawn_dev_idp(
    listen: SocketAddr,
    saml: &certs::DevSamlFiles,
    certs_dir: &Path,
) -> Result<DevIdps, idp::DevIdpError> {
    let base = format!("https://localhost:{}/_varco/saml", listen.port());
    let mut spawned = Vec::new();
    for (profile, name, file) in [
        (
            crate::saml::authn_request::Profile::Spid,
            "IdP di sviluppo varco",
            "dev-idp-metadata.xml",
        ),
        (
            crate::saml::authn_request::Profile::Cie,
            "CIE di sviluppo varco",
            "dev-cie-metadata.xml",
        ),
    ] {
        let idp = idp::spawn(
            idp::DevIdpConfig {
                idp_cert_pem: saml.idp_cert.clone(),
                idp_key_pem: saml.idp_key.clone(),
                sp_cert_pem: saml.sp_cert.clone(),
                sp_entity_id: DEMO_SP_ENTITY_ID.into(),
                acs_url: format!("{base}/acs"),
                slo_url: format!("{base}/slo"),
                profile,
                name,
            },
            0,
        )
        .await?;
        let file = certs_dir.join(file);
        std::fs::write(&file, &idp.metadata)?;
        spawned.push((idp.addr, file));
    }
    write_directory(certs_dir)?;
    let cie = spawned.pop().ok_or(idp::DevIdpError::Key)?;
    let spid = spawned.pop().ok_or(idp::DevIdpError::Key)?;
    Ok(DevIdps { spid, cie })
}

/// The demo's systems of record: the operator and the volunteer belong to
/// `patronato-demo`; the citizen (Mario Rossi) has delegated that patronato.
fn write_directory(dir: &Path) -> std::io::Result<()> {
    let users = users::test_users();
    let code = |key: &str| {
        users
            .iter()
            .find(|u| u.key == key)
            .map(|u| u.identity.subject.as_str().to_string())
            .unwrap_or_default()
    };
    std::fs::write(
        dir.join("demo-ruoli.csv"),
        format!(
            "fiscal_code,role,patronato,valid_from,valid_to\n{},operatore,patronato-demo,2020-01-01,\n{},volontario,patronato-demo,2020-01-01,\n",
            code("operatore"),
            code("volontario")
        ),
    )?;
    std::fs::write(
        dir.join("demo-deleghe.csv"),
        format!(
            "patronato,assistito,valid_from,valid_to,revoked\npatronato-demo,{},2025-01-01,,false\n",
            code("cittadino")
        ),
    )?;
    // The legacy verifier's file: Mario Rossi's PIN predates the issuance stop (refused
    // since the cutoff); the minor's was issued after it, for the minors' services.
    let hash = |pin: &str| crate::pin::hash_secret(pin).map_err(std::io::Error::other);
    std::fs::write(
        dir.join("demo-pin.csv"),
        format!(
            "fiscal_code,issued,date_of_birth,hash\n{},2019-05-01,,{}\n{},2022-02-01,,{}\n",
            code("cittadino"),
            hash(DEMO_PINS[0].1)?,
            code("minore"),
            hash(DEMO_PINS[1].1)?,
        ),
    )
}

/// The demo's CNS cards: Mario Rossi's is valid, Giulia Bianchi's revoked.
pub fn ensure_dev_cns(certs_dir: &Path) -> Result<certs::DevCnsFiles, certs::DevCertError> {
    let users = users::test_users();
    let who = |key: &str| {
        users
            .iter()
            .find(|u| u.key == key)
            .map(|u| {
                (
                    u.identity.subject.as_str().to_string(),
                    u.identity.given_name.to_uppercase(),
                    u.identity.family_name.to_uppercase(),
                )
            })
            .unwrap_or_default()
    };
    let (valid, revoked) = (who("cittadino"), who("operatore"));
    certs::ensure_dev_cns(
        certs_dir,
        [
            (&valid.0, &valid.1, &valid.2),
            (&revoked.0, &revoked.1, &revoked.2),
        ],
    )
}

/// The demo's legacy PINs (user key, PIN): development only.
pub const DEMO_PINS: [(&str, &str); 2] = [("cittadino", "12345678"), ("minore", "87654321")];

/// Starts the development OP for a gateway on `listen`, with a client secret generated
/// now and written into `certs_dir`; returns its issuer and the secret's file.
pub async fn spawn_dev_op(
    listen: SocketAddr,
    certs_dir: &Path,
) -> Result<(String, std::path::PathBuf), op::DevOpError> {
    let secret = crate::oidc::pkce::random_value();
    let file = certs_dir.join("dev-op.secret");
    std::fs::write(&file, format!("{secret}\n"))?;
    let base = format!("https://localhost:{}/_varco/oidc", listen.port());
    let spawned = op::spawn(
        op::DevOpConfig {
            client_secret: secret,
            redirect_uri: format!("{base}/callback/dev-op"),
            post_logout_redirect_uri: format!("{base}/logged-out"),
        },
        0,
    )
    .await?;
    Ok((spawned.issuer, file))
}

/// Where the demo's development providers are.
pub struct DevProviders<'a> {
    pub idp_metadata: &'a Path,
    pub cie_metadata: &'a Path,
    pub cns: &'a certs::DevCnsFiles,
    pub op_issuer: &'a str,
    pub op_secret: &'a Path,
}

/// The demo configuration, with the echo upstream's address, the TLS and SAML files and
/// the development IdP's and OP's details filled in.
pub fn demo_config(
    listen: SocketAddr,
    echo: SocketAddr,
    tls: &certs::DevTlsFiles,
    saml: &certs::DevSamlFiles,
    providers: &DevProviders<'_>,
) -> Result<Config, ConfigError> {
    let idp_metadata = providers.idp_metadata;
    let text = include_str!("../../config/demo.toml")
        .replace("@OP_ISSUER@", providers.op_issuer)
        .replace("@OP_SECRET@", &toml_path(providers.op_secret))
        .replace("@LISTEN@", &listen.to_string())
        .replace("@PORT@", &listen.port().to_string())
        .replace("@SAML_CERT@", &toml_path(&saml.sp_cert))
        .replace("@SAML_KEY@", &toml_path(&saml.sp_key))
        .replace("@IDP_METADATA@", &toml_path(idp_metadata))
        .replace("@CIE_METADATA@", &toml_path(providers.cie_metadata))
        .replace("@CNS_CA@", &toml_path(&providers.cns.ca))
        .replace("@CNS_CRL@", &toml_path(&providers.cns.crl))
        .replace(
            "@DIRECTORY@",
            &toml_path(idp_metadata.parent().unwrap_or(Path::new("."))),
        )
        .replace("@ECHO@", &echo.to_string())
        .replace("@CERT@", &toml_path(&tls.cert))
        .replace("@KEY@", &toml_path(&tls.key));
    let cfg = Config::from_toml("(embedded demo configuration)", &text)?;
    debug_assert_eq!(cfg.mode, Mode::Demo);
    Ok(cfg)
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/").replace('"', "")
}
