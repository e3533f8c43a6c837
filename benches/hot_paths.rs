//! Criterion benches for the functions on every request: path normalization, route
//! lookup, identity-header stripping and hop-by-hop removal.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use varco::config::Config;
use varco::proxy::headers::{IdentityPrefix, remove_hop_by_hop};
use varco::routes::{RouteTable, normalize_path};

fn table() -> RouteTable {
    let mut text = String::from(
        "[[server.listener]]\naddress = \"127.0.0.1:0\"\n[upstream.a]\nurl = \"http://127.0.0.1:1\"\n",
    );
    for (host, path) in [
        ("*", "/"),
        ("*", "/fascicolo"),
        ("*", "/domande"),
        ("*", "/domande/nuova"),
        ("*", "/stampa"),
        ("*", "/interni"),
        ("*", "/cittadino"),
        ("*.inps.example", "/"),
        ("app.inps.example", "/api"),
        ("app.inps.example", "/api/v2"),
    ] {
        text.push_str(&format!(
            "[[route]]\nhost = \"{host}\"\npath = \"{path}\"\nupstream = \"a\"\npublic = true\n"
        ));
    }
    let cfg = Config::from_toml("bench", &text).expect("bench config");
    let upstreams = varco::proxy::Upstreams::new(&cfg.upstream, cfg.server.request_timeout)
        .expect("bench upstreams");
    RouteTable::new(
        &cfg.route,
        &upstreams,
        &varco::telemetry::Metrics::new(),
        cfg.server.max_body_bytes,
        cfg.server.case_insensitive_paths,
    )
    .expect("bench routes")
}

fn typical_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "app.inps.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/130.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "it-IT,it;q=0.8,en-US;q=0.5,en;q=0.3"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "cookie",
            "__Host-varco=abcdefabcdefabcdefabcdefabcdefabcdef",
        ),
        ("connection", "keep-alive"),
        ("referer", "https://app.inps.example/fascicolo/"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let t = table();
    c.bench_function("normalize_path/normal", |b| {
        b.iter(|| normalize_path(black_box("/fascicolo/RSSMRA80A01H501U/documenti")))
    });
    c.bench_function("normalize_path/dirty", |b| {
        b.iter(|| normalize_path(black_box("/fascicolo/%2e%2e//domande/./x%2fy")))
    });
    c.bench_function("route_lookup/exact_host", |b| {
        b.iter(|| {
            t.lookup(
                black_box("app.inps.example"),
                black_box("/api/v2/pratiche/123"),
            )
        })
    });
    c.bench_function("route_lookup/any_host", |b| {
        b.iter(|| t.lookup(black_box("other.example"), black_box("/domande/nuova/x")))
    });
    let prefix = IdentityPrefix::new("x-varco-");
    let clean = typical_headers();
    c.bench_function("strip_identity/clean", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |h| prefix.strip(h),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut spoofed = typical_headers();
    spoofed.append("x-varco-assertion", HeaderValue::from_static("forged"));
    spoofed.append("x_varco_roles", HeaderValue::from_static("admin"));
    c.bench_function("strip_identity/spoofed", |b| {
        b.iter_batched_ref(
            || spoofed.clone(),
            |h| prefix.strip(h),
            criterion::BatchSize::SmallInput,
        )
    });
    // Every request: the client facts (forwarded, client-IP, override headers) an
    // untrusted peer may not state, in any spelling.
    c.bench_function("strip_client_facts/clean", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |h| varco::proxy::headers::strip_client_facts(h, false),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut facts = typical_headers();
    facts.append("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
    facts.append("x-original-url", HeaderValue::from_static("/admin"));
    c.bench_function("strip_client_facts/spoofed", |b| {
        b.iter_batched_ref(
            || facts.clone(),
            |h| varco::proxy::headers::strip_client_facts(h, false),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("remove_hop_by_hop", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            remove_hop_by_hop,
            criterion::BatchSize::SmallInput,
        )
    });
}

fn identity() -> varco::identity::Identity {
    use varco::identity::{FiscalCode, Identity, Level, Method, Role};
    Identity {
        subject: FiscalCode::parse("RSSMRA80A01H501U").expect("valid code"),
        given_name: "Mario".into(),
        family_name: "Rossi".into(),
        level: Level::SpidL2,
        method: Method::Spid,
        idp: "https://idp.example/".into(),
        roles: vec![Role("operatore".into())],
        patronato: None,
        auth_time: 0,
        extra: Default::default(),
    }
}

fn minting(c: &mut Criterion) {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};
    use varco::assertion::{KeySet, Minter, RequestBinding, SessionClaims, SigningAlgorithm};

    let claims = SessionClaims::new("https://gw.example/", &identity(), "sidhash").expect("claims");
    let binding = RequestBinding {
        audience: "pensioni",
        method: "GET",
        url: "https://app.example.it/fascicolo/RSSMRA80A01H501U?anno=2020",
    };
    for (name, alg, key) in [
        (
            "mint/ES256",
            SigningAlgorithm::ES256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        ("mint/EdDSA", SigningAlgorithm::EdDSA, &rcgen::PKCS_ED25519),
    ] {
        let pem = rcgen::KeyPair::generate_for(key)
            .expect("key")
            .serialize_pem()
            .into_bytes();
        let keys = KeySet::from_pems(vec![("k1".into(), alg, pem)], Some("k1")).expect("keys");
        let minter = Minter::new(Arc::new(keys), Duration::from_secs(60));
        c.bench_function(name, |b| {
            b.iter(|| minter.mint(&claims, &binding, SystemTime::now()))
        });
    }
    // The signature alone, with aws-lc-rs directly over a token-sized input: what
    // `mint/ES256` costs beyond it is jsonwebtoken's signer, the claims and base64.
    {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der())
            .expect("pkcs8");
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let input = vec![b'a'; 620];
        c.bench_function("sign/ES256_aws_lc_rs_only", |b| {
            b.iter(|| key.sign(&rng, black_box(&input)).expect("sign"))
        });
    }
}

/// What a protected request adds to a public one: cookie → session lookup → minting.
fn protected_path(c: &mut Criterion) {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};
    use varco::assertion::{KeySet, Minter, RequestBinding, SessionClaims};
    use varco::session::cookie::CookieSpec;
    use varco::session::{Limits, MemoryStore, Session, SessionId, SessionStore, SystemClock};

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = MemoryStore::new(
        Limits {
            idle: Duration::from_secs(1800),
            absolute: Duration::from_secs(8 * 3600),
            capacity: 100_000,
        },
        Arc::new(SystemClock::default()),
        None,
    );
    let spec = CookieSpec {
        name: "__Host-varco".into(),
        secure: true,
    };
    let minter = Minter::new(
        Arc::new(KeySet::ephemeral("k1").expect("key")),
        Duration::from_secs(60),
    );
    // A store with many sessions, one of them ours.
    let mut ours = None;
    for i in 0..10_000 {
        let id = SessionId::random();
        let claims =
            SessionClaims::new("https://gw.example/", &identity(), &id.hash()).expect("claims");
        let session = Session {
            identity: identity(),
            created: SystemClock::default().now_secs(),
            sid: id.hash(),
            claims: Some(claims),
            link: Default::default(),
        };
        rt.block_on(store.put(&id, session)).expect("put");
        if i == 5_000 {
            ours = Some(id);
        }
    }
    let ours = ours.expect("session");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("lang=it; __Host-varco={}", ours.to_cookie_value()))
            .expect("cookie"),
    );
    c.bench_function("protected_path/cookie+session+mint", |b| {
        b.iter(|| {
            let id = spec.read(black_box(&headers)).expect("cookie");
            let session = rt
                .block_on(store.get(&id))
                .expect("store")
                .expect("session");
            let claims = session.claims.as_ref().expect("claims");
            minter.mint(
                claims,
                &RequestBinding {
                    audience: "pensioni",
                    method: "GET",
                    url: "https://app.example.it/fascicolo?anno=2020",
                },
                SystemTime::now(),
            )
        })
    });
}

/// The ACS's work per login: pre-filter, envelope, xmlsec signature verification and
/// reduction, assertion rules (the corpus's valid response, its fixed clock).
fn saml_acs(c: &mut Criterion) {
    use base64::Engine as _;
    use varco::identity::Level;
    use varco::saml::authn_request::Profile;
    use varco::saml::response::{Expected, validate_response};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/saml");
    let xml = std::fs::read_to_string(format!("{dir}/valid-spid-response.xml")).unwrap();
    let form = base64::engine::general_purpose::STANDARD.encode(&xml);
    let pem = std::fs::read_to_string(format!("{dir}/idp-test.crt.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let cert = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let exp = Expected {
        profile: Profile::Spid,
        idp_entity_id: "https://idp.example/",
        sp_entity_id: "https://sp.example.it/",
        acs_url: "https://sp.example.it/_varco/saml/acs",
        request_id: "_req1",
        request_issued_at: 1_795_840_000 - 30,
        requested_level: Level::SpidL2,
        now: 1_795_840_000,
        skew: 5,
    };
    assert!(validate_response(&form, &exp, std::slice::from_ref(&cert)).is_ok());
    c.bench_function("saml/validate_response", |b| {
        b.iter(|| validate_response(&form, &exp, std::slice::from_ref(&cert)))
    });
    // As most IdPs send it: the Response signed too, around the signed Assertion.
    let both = std::fs::read_to_string(format!("{dir}/ok-response-and-assertion-both-signed.xml"))
        .unwrap();
    let form = base64::engine::general_purpose::STANDARD.encode(&both);
    assert!(validate_response(&form, &exp, std::slice::from_ref(&cert)).is_ok());
    c.bench_function("saml/validate_response_both_signed", |b| {
        b.iter(|| validate_response(&form, &exp, std::slice::from_ref(&cert)))
    });
}

/// Policy evaluation on every request: `decide` for a volunteer opening a client's file
/// on the example's pension-file route (delegation prefetched, as from a warm cache), and
/// an operator on the applications route.
fn policy(c: &mut Criterion) {
    use varco::config::Config;
    use varco::identity::{Date, Level, Method, Role};
    use varco::policy::{DelegationRecord, Prefetched, RequestFacts, decide, delegation_needed};
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/patronato.example.toml"
    ))
    .unwrap();
    let mut replaced = text.clone();
    for p in [
        "/etc/varco/tls/chain.pem",
        "/etc/varco/tls/key.pem",
        "/etc/varco/keys/2026-11.pem",
        "/etc/varco/patronato/ruoli.csv",
        "/etc/varco/patronato/deleghe.csv",
        "/etc/varco/inps-ca.pem",
    ] {
        let f = dir.path().join(p.rsplit('/').next().unwrap());
        std::fs::write(&f, "x").unwrap();
        replaced = replaced.replace(p, &f.display().to_string());
    }
    let cfg = Config::from_toml("patronato", &replaced).unwrap();
    let fascicolo = cfg.route[0].policy.as_ref().unwrap().compile().unwrap();
    let domande = cfg.route[1].policy.as_ref().unwrap().compile().unwrap();
    let mut volunteer = identity();
    volunteer.roles = vec![Role("volontario".into())];
    volunteer.patronato = Some("P1".into());
    volunteer.level = Level::SpidL2;
    volunteer.method = Method::Spid;
    let mut operator = volunteer.clone();
    operator.roles = vec![Role("operatore".into())];
    let headers = HeaderMap::new();
    let path = "/fascicolo/RSSMRA80A01H501U/estratto-contributivo";
    let facts = RequestFacts {
        method: &http::Method::GET,
        path,
        query: None,
        headers: &headers,
        form_fields: &[],
        today: Date::new(2026, 11, 28).unwrap(),
    };
    let record = DelegationRecord {
        valid_from: Date::new(2025, 1, 1).unwrap(),
        valid_to: None,
        revoked: false,
    };
    c.bench_function("policy/decide_volunteer_with_delegation", |b| {
        b.iter(|| {
            let key = delegation_needed(&fascicolo, &volunteer, &facts);
            let lookups = Prefetched {
                key,
                answer: Ok(Some(record.clone())),
            };
            decide(&fascicolo, &volunteer, &facts, &lookups)
        })
    });
    let post = RequestFacts {
        method: &http::Method::POST,
        path: "/domande/nuova",
        ..facts
    };
    c.bench_function("policy/decide_operator_application", |b| {
        b.iter(|| {
            let lookups = Prefetched {
                key: None,
                answer: Ok(None),
            };
            decide(&domande, &operator, &post, &lookups)
        })
    });
}

/// The PIN switch-off: the per-request gate of a PIN credential (categories + admission),
/// the Basic-credential cache key, and the argon2id check a PIN login or a telephone-PIN
/// verification costs (the rate limiter bounds how often an attacker can make it run).
fn pin(c: &mut Criterion) {
    use varco::identity::{Date, FiscalCode};
    use varco::pin::{Category, Switch, admit, categories, hash_secret, verify_secret};
    let switch = Switch {
        issuance_stop: Date::new(2020, 10, 1).expect("date"),
        cutoff: Date::new(2021, 9, 30).expect("date"),
    };
    let subject = FiscalCode::parse("RSSMRA80A01H501U").expect("cf");
    let today = Date::new(2026, 11, 28).expect("date");
    let issued = Date::new(2019, 1, 1).expect("date");
    c.bench_function("pin/gate_after_cutoff_dedicated_route", |b| {
        b.iter(|| {
            let held = categories(
                std::hint::black_box(&subject),
                None,
                &[Category::Guardianship],
                today,
            );
            admit(
                &switch,
                today,
                issued,
                &held,
                &[Category::Guardianship],
                false,
            )
        })
    });
    let key = varco::pin::CredentialKey::random();
    c.bench_function("pin/basic_cache_key_hmac", |b| {
        b.iter(|| key.tag(&[b"RSSMRA80A01H501U", std::hint::black_box(b"Segreto-99")]))
    });
    let hash = hash_secret("12345678").expect("hash");
    let mut g = c.benchmark_group("pin");
    g.sample_size(20);
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| verify_secret(std::hint::black_box("12345678"), &hash))
    });
    g.finish();
}

/// OIDC: one ID token validated (ES256, every rule), and a three-statement trust chain
/// verified and its metadata resolved (what a cache miss of a federation OP costs).
fn oidc(c: &mut Criterion) {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;
    use varco::identity::Level;
    use varco::oidc::{id_token, trust_chain};

    let now = 1_800_000_000u64;
    let key = |kid: &str| {
        let pair = rcgen::KeyPair::generate().expect("key");
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem");
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        (enc, jwk)
    };
    let sign = |enc: &EncodingKey, kid: &str, typ: Option<&str>, claims: &serde_json::Value| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        h.typ = typ.map(str::to_string);
        jsonwebtoken::encode(&h, claims, enc).expect("sign")
    };
    let (op_key, op_jwk) = key("op");
    let token = sign(
        &op_key,
        "op",
        None,
        &json!({"iss": "https://op.example/", "aud": "https://rp.example/", "sub": "p1",
            "iat": now, "exp": now + 300, "nonce": "n".repeat(43),
            "acr": "https://www.spid.gov.it/SpidL2"}),
    );
    let jwks = JwkSet {
        keys: vec![op_jwk.clone()],
    };
    let acr = id_token::AcrMap::spid();
    let nonce = "n".repeat(43);
    let expected = id_token::Expected {
        issuer: "https://op.example/",
        client_id: "https://rp.example/",
        nonce: &nonce,
        algorithms: &[Algorithm::ES256, Algorithm::RS256],
        acr: &acr,
        required: Level::SpidL2,
        leeway: 30,
        max_age: 600,
        now,
    };
    assert!(id_token::validate(&token, &jwks, &expected).is_ok());
    let mut g = c.benchmark_group("oidc");
    g.bench_function("id_token_validate_es256", |b| {
        b.iter(|| id_token::validate(black_box(&token), &jwks, &expected))
    });

    let (ta_key, ta_jwk) = key("ta");
    let (int_key, int_jwk) = key("int");
    let typ = Some("entity-statement+jwt");
    let (ta, int, op) = (
        "https://ta.example/",
        "https://int.example/",
        "https://op.example/",
    );
    let chain = [
        sign(
            &op_key,
            "op",
            typ,
            &json!({"iss": op, "sub": op, "iat": now, "exp": now + 3600,
            "jwks": {"keys": [op_jwk]}, "authority_hints": [int],
            "metadata": {"openid_provider": {"issuer": op,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"]}}}),
        ),
        sign(
            &int_key,
            "int",
            typ,
            &json!({"iss": int, "sub": op, "iat": now, "exp": now + 3600,
            "jwks": {"keys": [op_jwk]}}),
        ),
        sign(
            &ta_key,
            "ta",
            typ,
            &json!({"iss": ta, "sub": int, "iat": now, "exp": now + 3600,
            "jwks": {"keys": [int_jwk]},
            "metadata_policy": {"openid_provider": {
                "id_token_signing_alg_values_supported": {"subset_of": ["RS256", "ES256"]}}}}),
        ),
    ];
    let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
    let anchor = trust_chain::TrustAnchor {
        entity_id: ta.into(),
        jwks: JwkSet { keys: vec![ta_jwk] },
    };
    assert!(trust_chain::resolve(&refs, &anchor, "openid_provider", now, 30).is_ok());
    g.bench_function("trust_chain_resolve_3_statements", |b| {
        b.iter(|| trust_chain::resolve(black_box(&refs), &anchor, "openid_provider", now, 30))
    });

    // UserInfo as the SPID/CIE profile sends it: a signed JWT encrypted with RSA-OAEP-256
    // and A256CBC-HS512 to our 2048-bit key; decrypted, then its signature verified.
    let (der, jwe) = userinfo_jwe(&sign(
        &op_key,
        "op",
        Some("JWT"),
        &json!({"iss": op, "aud": "https://rp.example/", "sub": "p1",
            "https://attributes.eid.gov.it/fiscal_number": "TINIT-RSSMRA80A01H501U"}),
    ));
    let keys =
        [varco::oidc::jwe::DecryptionKey::from_pkcs8(Some("enc".into()), &der).expect("key")];
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).expect("jwk");
    let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.set_audience(&["https://rp.example/"]);
    v.set_required_spec_claims(&["iss", "aud", "sub"]);
    let open = |jwe: &str| {
        let d = varco::oidc::jwe::decrypt(jwe, &keys).expect("decrypts");
        let inner = String::from_utf8(d.plaintext).expect("text");
        jsonwebtoken::decode::<serde_json::Value>(&inner, &decoding, &v).expect("verifies")
    };
    open(&jwe);
    g.bench_function("userinfo_jwe_decrypt_and_verify", |b| {
        b.iter(|| open(black_box(&jwe)))
    });
    g.finish();
}

/// A fresh RSA key (PKCS#8 DER) and a compact JWE of `plaintext` to it (RSA-OAEP-256,
/// A256CBC-HS512, `cty: JWT`), built as a provider builds one.
fn userinfo_jwe(plaintext: &str) -> (Vec<u8>, String) {
    use aws_lc_rs::cipher::{
        AES_256, EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey,
    };
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::iv::FixedLength;
    use aws_lc_rs::rsa::{
        KeySize, OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PrivateDecryptingKey,
    };
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("rsa");
    let der = private.as_der().expect("der").as_ref().to_vec();
    let cek: [u8; 64] = std::array::from_fn(|_| rand::random());
    let public = OaepPublicEncryptingKey::new(private.public_key()).expect("public");
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut wrapped, None)
        .expect("wrap")
        .to_vec();
    let iv: [u8; 16] = rand::random();
    let (mac_key, enc_key) = cek.split_at(32);
    let aes =
        PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, enc_key).expect("aes"))
            .expect("cbc");
    let mut e = plaintext.as_bytes().to_vec();
    aes.less_safe_encrypt(&mut e, EncryptionContext::Iv128(FixedLength::from(iv)))
        .expect("encrypt");
    let head =
        B64.encode(r#"{"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"enc","cty":"JWT"}"#);
    // RFC 7518 §5.2.2.1: HMAC over AAD || IV || ciphertext || AL (AAD length in bits).
    let mut mac_input = head.as_bytes().to_vec();
    mac_input.extend_from_slice(&iv);
    mac_input.extend_from_slice(&e);
    mac_input.extend_from_slice(&((head.len() as u64) * 8).to_be_bytes());
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA512, mac_key),
        &mac_input,
    );
    let jwe = [
        head,
        B64.encode(wrapped),
        B64.encode(iv),
        B64.encode(&e),
        B64.encode(&tag.as_ref()[..32]),
    ]
    .join(".");
    (der, jwe)
}

criterion_group!(
    benches,
    bench,
    minting,
    protected_path,
    saml_acs,
    policy,
    pin,
    oidc
);
criterion_main!(benches);
