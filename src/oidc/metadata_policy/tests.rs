//! Each operator, each merge rule and each illegal combination, on small fixtures.

use serde_json::{Value, json};

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn op_metadata() -> Map<String, Value> {
    obj(json!({
        "issuer": "https://op.example/",
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["pairwise"],
        "contacts": ["ops@op.example"],
    }))
}

#[test]
fn each_operator_applies_to_the_metadata() {
    let policy = obj(json!({
        // value: set (and null: removed)
        "subject_types_supported": {"value": ["pairwise"]},
        "contacts": {"value": null},
        // add: united with what is there
        "grant_types_supported": {"add": ["refresh_token"]},
        // default: only when absent
        "request_parameter_supported": {"default": true},
        "grant_types_supported_default": {"default": ["implicit"]},
        // subset_of: narrows the value
        "id_token_signing_alg_values_supported": {"subset_of": ["RS256", "ES256", "PS256"]},
        // superset_of: must contain
        "token_endpoint_auth_methods_supported": {"superset_of": ["private_key_jwt"]},
        // essential: must be present
        "issuer": {"essential": true, "one_of": ["https://op.example/"]},
    }));
    let out = apply(&policy, &op_metadata()).unwrap();
    assert_eq!(out["subject_types_supported"], json!(["pairwise"]));
    assert!(!out.contains_key("contacts"));
    assert_eq!(
        out["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(out["request_parameter_supported"], json!(true));
    assert_eq!(out["grant_types_supported_default"], json!(["implicit"]));
    // A default does not replace a value that is there.
    let keep = obj(json!({"issuer": {"default": "https://other.example/"}}));
    assert_eq!(
        apply(&keep, &op_metadata()).unwrap()["issuer"],
        json!("https://op.example/")
    );
    assert_eq!(out["issuer"], json!("https://op.example/"));
    assert_eq!(
        out["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
}

#[test]
fn metadata_outside_the_policy_is_refused() {
    let run = |p: Value| apply(&obj(p), &op_metadata());
    assert_eq!(
        run(json!({"issuer": {"one_of": ["https://ta-approved.example/"]}})),
        Err(PolicyError::Violation {
            param: "issuer".into(),
            op: "one_of".into()
        })
    );
    assert_eq!(
        run(json!({"token_endpoint_auth_methods_supported": {"superset_of": ["tls_client_auth"]}})),
        Err(PolicyError::Violation {
            param: "token_endpoint_auth_methods_supported".into(),
            op: "superset_of".into()
        })
    );
    assert_eq!(
        run(json!({"userinfo_encryption_alg_values_supported": {"essential": true}})),
        Err(PolicyError::Essential {
            param: "userinfo_encryption_alg_values_supported".into()
        })
    );
    assert_eq!(
        run(json!({"issuer": {"subset_of": ["https://op.example/"]}})),
        Err(PolicyError::Violation {
            param: "issuer".into(),
            op: "subset_of".into()
        })
    );
    assert_eq!(
        run(json!({"issuer": {"regexp": "^https://"}})),
        Err(PolicyError::UnknownOperator {
            param: "issuer".into(),
            op: "regexp".into()
        })
    );
    assert_eq!(
        run(json!({"issuer": "https://op.example/"})),
        Err(PolicyError::NotOperators("issuer".into()))
    );
    // subset_of with nothing in common removes the parameter, and essential then fails.
    assert_eq!(
        run(
            json!({"id_token_signing_alg_values_supported": {"subset_of": ["EdDSA"], "essential": true}})
        ),
        Err(PolicyError::Essential {
            param: "id_token_signing_alg_values_supported".into()
        })
    );
}

#[test]
fn superiors_policies_merge_by_operator() {
    let ta = obj(json!({
        "id_token_signing_alg_values_supported": {"subset_of": ["RS256", "ES256", "PS256"], "superset_of": ["RS256"]},
        "grant_types_supported": {"add": ["authorization_code"]},
        "subject_types_supported": {"value": ["pairwise"]},
        "request_parameter_supported": {"default": true},
        "issuer": {"essential": false},
    }));
    let intermediate = obj(json!({
        "id_token_signing_alg_values_supported": {"subset_of": ["RS256", "ES256"], "superset_of": ["ES256"]},
        "grant_types_supported": {"add": ["refresh_token"]},
        "subject_types_supported": {"value": ["pairwise"]},
        "request_parameter_supported": {"default": true},
        "issuer": {"essential": true},
        "contacts": {"add": ["fed@intermediate.example"]},
    }));
    let m = merge(&ta, &intermediate).unwrap();
    let alg = &m["id_token_signing_alg_values_supported"];
    assert_eq!(alg["subset_of"], json!(["RS256", "ES256"]));
    assert_eq!(alg["superset_of"], json!(["RS256", "ES256"]));
    assert_eq!(
        m["grant_types_supported"]["add"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(m["issuer"]["essential"], json!(true));
    assert_eq!(m["contacts"]["add"], json!(["fed@intermediate.example"]));
    // Applied, the merged policy keeps what both allow.
    let out = apply(&m, &op_metadata()).unwrap();
    assert_eq!(
        out["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
}

#[test]
fn superiors_that_disagree_are_a_conflict() {
    let conflict = |a: Value, b: Value| merge(&obj(a), &obj(b)).unwrap_err();
    assert_eq!(
        conflict(json!({"p": {"value": "a"}}), json!({"p": {"value": "b"}})),
        PolicyError::Conflict {
            param: "p".into(),
            op: "value".into()
        }
    );
    assert_eq!(
        conflict(json!({"p": {"default": 1}}), json!({"p": {"default": 2}})),
        PolicyError::Conflict {
            param: "p".into(),
            op: "default".into()
        }
    );
    assert_eq!(
        conflict(
            json!({"p": {"one_of": ["a"]}}),
            json!({"p": {"one_of": ["b"]}})
        ),
        PolicyError::Conflict {
            param: "p".into(),
            op: "one_of".into()
        }
    );
    // A merge that makes an illegal combination: the TA's value outside the
    // intermediate's subset_of.
    assert_eq!(
        conflict(
            json!({"p": {"value": ["x"]}}),
            json!({"p": {"subset_of": ["y"]}})
        ),
        PolicyError::Combination {
            param: "p".into(),
            a: "value".into(),
            b: "subset_of".into()
        }
    );
}

#[test]
fn illegal_combinations_are_refused() {
    let bad = |ops: Value| check("p", ops.as_object().unwrap()).unwrap_err();
    let combo = |a: &str, b: &str| PolicyError::Combination {
        param: "p".into(),
        a: a.into(),
        b: b.into(),
    };
    assert_eq!(
        bad(json!({"value": ["a"], "add": ["b"]})),
        combo("value", "add")
    );
    assert_eq!(
        bad(json!({"value": null, "default": "a"})),
        combo("value", "default")
    );
    assert_eq!(
        bad(json!({"value": "c", "one_of": ["a", "b"]})),
        combo("value", "one_of")
    );
    assert_eq!(
        bad(json!({"value": ["a"], "superset_of": ["a", "b"]})),
        combo("value", "superset_of")
    );
    assert_eq!(
        bad(json!({"value": null, "essential": true})),
        combo("value", "essential")
    );
    assert_eq!(
        bad(json!({"add": ["c"], "subset_of": ["a"]})),
        combo("add", "subset_of")
    );
    assert_eq!(
        bad(json!({"add": ["a"], "one_of": ["a"]})),
        combo("add", "one_of")
    );
    assert_eq!(
        bad(json!({"default": "c", "one_of": ["a"]})),
        combo("default", "one_of")
    );
    assert_eq!(
        bad(json!({"one_of": ["a"], "subset_of": ["a"]})),
        combo("one_of", "subset_of/superset_of")
    );
    assert_eq!(
        bad(json!({"subset_of": ["a"], "superset_of": ["a", "b"]})),
        combo("subset_of", "superset_of")
    );
    assert_eq!(
        bad(json!({"essential": "yes"})),
        PolicyError::OperatorType {
            param: "p".into(),
            op: "essential".into()
        }
    );
    assert_eq!(
        bad(json!({"one_of": "a"})),
        PolicyError::OperatorType {
            param: "p".into(),
            op: "one_of".into()
        }
    );
    // Legal ones pass.
    for ok in [
        json!({"value": ["a", "b"], "add": ["a"], "subset_of": ["a", "b", "c"], "superset_of": ["a"], "essential": true}),
        json!({"default": "a", "one_of": ["a", "b"], "essential": true}),
        json!({"add": ["a"], "default": ["a"], "subset_of": ["a", "b"], "superset_of": ["a"]}),
    ] {
        assert!(check("p", ok.as_object().unwrap()).is_ok(), "{ok}");
    }
}
