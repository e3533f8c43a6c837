//! A trust anchor, an intermediate and an OP with keys generated here, their statements
//! served from a map: the walk up the authority hints, loops, dead ends, and trust marks.

use std::collections::HashMap;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: u64 = 1_800_000_000;
const TA: &str = "https://ta.example";
const INT: &str = "https://int.example";
const OP: &str = "https://op.example";
const MARK: &str = "https://ta.example/openid_provider/public";

struct Entity {
    id: &'static str,
    key: EncodingKey,
    jwk: Jwk,
}

fn entity(id: &'static str) -> Entity {
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(format!("{id}#1"));
    Entity { id, key, jwk }
}

impl Entity {
    fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    fn sign(&self, typ: &str, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(typ.into());
        h.kid = self.jwk.common.key_id.clone();
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            entity_id: self.id.into(),
            jwks: JwkSet {
                keys: vec![self.jwk.clone()],
            },
        }
    }

    /// A superior's configuration: its keys, hints and fetch endpoint.
    fn configuration(&self, hints: &[&str]) -> String {
        self.sign(
            "entity-statement+jwt",
            &json!({
                "iss": self.id, "sub": self.id, "iat": NOW - 10, "exp": NOW + 3600,
                "jwks": self.jwks(), "authority_hints": hints,
                "metadata": {"federation_entity": {"federation_fetch_endpoint": format!("{}/fetch", self.id)}},
            }),
        )
    }

    fn about(&self, sub: &Entity) -> String {
        self.sign(
            "entity-statement+jwt",
            &json!({"iss": self.id, "sub": sub.id, "iat": NOW - 10, "exp": NOW + 7200, "jwks": sub.jwks()}),
        )
    }

    fn mark_for(&self, sub: &str, id: &str, exp: u64) -> String {
        self.sign(
            "trust-mark+jwt",
            &json!({"iss": self.id, "sub": sub, "id": id, "iat": NOW - 10, "exp": exp}),
        )
    }
}

struct Map_(HashMap<String, String>);

impl Fetch for Map_ {
    async fn get(&self, url: String) -> Result<String, String> {
        self.0.get(&url).cloned().ok_or_else(|| "404".into())
    }
}

fn fetch_url(by: &str, sub: &str) -> String {
    format!(
        "{by}/fetch?sub={}",
        form_urlencoded::byte_serialize(sub.as_bytes()).collect::<String>()
    )
}

fn op_configuration(op: &Entity, hints: &[&str], marks: Value) -> String {
    op.sign(
        "entity-statement+jwt",
        &json!({
            "iss": OP, "sub": OP, "iat": NOW - 10, "exp": NOW + 3600,
            "jwks": op.jwks(), "authority_hints": hints,
            "metadata": {"openid_provider": {"issuer": OP, "authorization_endpoint": format!("{OP}/auth")}},
            "trust_marks": marks,
        }),
    )
}

struct World {
    ta: Entity,
    int: Entity,
    op: Entity,
    docs: HashMap<String, String>,
}

fn world(marks: impl FnOnce(&Entity) -> Value) -> World {
    let (ta, int, op) = (entity(TA), entity(INT), entity(OP));
    let mut docs = HashMap::new();
    docs.insert(
        configuration_url(OP),
        op_configuration(&op, &[INT], marks(&ta)),
    );
    docs.insert(configuration_url(INT), int.configuration(&[TA]));
    docs.insert(configuration_url(TA), ta.configuration(&[]));
    docs.insert(fetch_url(INT, OP), int.about(&op));
    docs.insert(fetch_url(TA, INT), ta.about(&int));
    World { ta, int, op, docs }
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_walk_up_the_hints_reaches_the_anchor_and_the_chain_resolves() {
    let w = world(|ta| json!([{"id": MARK, "trust_mark": ta.mark_for(OP, MARK, NOW + 60)}]));
    let fetch = Map_(w.docs.clone());
    let chain = run(collect(OP, TA, &fetch)).unwrap();
    assert_eq!(chain.len(), 3);
    let resolved = run(resolve_provider(
        OP,
        &w.ta.anchor(),
        &[MARK.into()],
        &fetch,
        NOW,
        0,
    ))
    .unwrap();
    assert_eq!(resolved.metadata["issuer"], OP);
    assert_eq!(resolved.expires, NOW + 3600);
    // Another anchor's keys do not verify the chain.
    let other = entity(TA);
    assert!(matches!(
        run(resolve_provider(OP, &other.anchor(), &[], &fetch, NOW, 0)),
        Err(FederationError::Chain(_))
    ));
    let _ = (&w.int, &w.op);
}

#[test]
fn trust_marks_must_be_there_valid_and_the_anchors() {
    type Marks = Box<dyn Fn(&Entity) -> Value>;
    let cases: Vec<(&str, Marks)> = vec![
        ("missing", Box::new(|_| json!([]))),
        (
            "expired",
            Box::new(|ta| json!([{"id": MARK, "trust_mark": ta.mark_for(OP, MARK, NOW - 1)}])),
        ),
        (
            "for another entity",
            Box::new(
                |ta| json!([{"id": MARK, "trust_mark": ta.mark_for("https://other.example", MARK, NOW + 60)}]),
            ),
        ),
        (
            "another mark",
            Box::new(
                |ta| json!([{"id": MARK, "trust_mark": ta.mark_for(OP, "https://ta.example/other", NOW + 60)}]),
            ),
        ),
        (
            "self-issued",
            Box::new(|_| {
                let rogue = entity(TA);
                json!([{"id": MARK, "trust_mark": rogue.mark_for(OP, MARK, NOW + 60)}])
            }),
        ),
    ];
    for (name, marks) in cases {
        let w = world(|ta| marks(ta));
        let fetch = Map_(w.docs.clone());
        let got = run(resolve_provider(
            OP,
            &w.ta.anchor(),
            &[MARK.into()],
            &fetch,
            NOW,
            0,
        ));
        assert!(
            matches!(got, Err(FederationError::TrustMark(..))),
            "{name}: {got:?}"
        );
    }
}

#[test]
fn loops_and_dead_ends_in_the_hints_end_the_walk() {
    // OP → INT → LOOP → INT ...: never reaches the anchor, and the walk ends.
    let w = world(|_| json!([]));
    let lp = entity("https://loop.example");
    let mut docs = w.docs.clone();
    docs.insert(
        configuration_url(INT),
        w.int.configuration(&["https://loop.example"]),
    );
    docs.insert(
        configuration_url("https://loop.example"),
        lp.configuration(&[INT]),
    );
    docs.insert(fetch_url("https://loop.example", INT), lp.about(&w.int));
    docs.insert(fetch_url(INT, "https://loop.example"), w.int.about(&lp));
    let got = run(collect(OP, TA, &Map_(docs)));
    assert!(
        matches!(got, Err(FederationError::NoPath { .. })),
        "{got:?}"
    );
    // A first hint that does not answer: the next one is tried.
    let mut docs = w.docs.clone();
    docs.insert(
        configuration_url(OP),
        op_configuration(&w.op, &["https://down.example", INT], json!([])),
    );
    assert_eq!(run(collect(OP, TA, &Map_(docs))).unwrap().len(), 3);
    // The leaf's own configuration missing is an error naming the URL.
    let mut docs = w.docs.clone();
    docs.remove(&configuration_url(OP));
    assert!(matches!(
        run(collect(OP, TA, &Map_(docs))),
        Err(FederationError::Fetch { .. })
    ));
}
