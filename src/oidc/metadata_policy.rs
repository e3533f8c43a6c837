//! Metadata policies of OpenID Federation 1.0 (§6.1): the standard operators (`value`,
//! `add`, `default`, `one_of`, `subset_of`, `superset_of`, `essential`), how the policies of
//! a trust chain's superiors combine into one (merge), which operator combinations are
//! legal, and the policy applied to an entity's metadata. Pure functions over JSON: the
//! trust chain resolution feeds them the statements' `metadata_policy` for one entity type
//! (e.g. `openid_provider`), superior first.
//!
//! Fails closed: a conflict between superiors, an illegal combination, an unknown operator,
//! a value outside what the policy allows or a missing essential parameter is an error,
//! and an entity whose chain's policy fails is not trusted.

use serde_json::{Map, Value};

/// One parameter's operators: operator name → its value.
pub type Operators = Map<String, Value>;
/// One entity type's policy: parameter name → its operators.
pub type Policy = Map<String, Value>;

const OPERATORS: [&str; 7] = [
    "value",
    "add",
    "default",
    "one_of",
    "subset_of",
    "superset_of",
    "essential",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`{param}`: the operator `{op}` is not supported")]
    UnknownOperator { param: String, op: String },
    #[error("`{param}`: `{op}` has a value of the wrong type")]
    OperatorType { param: String, op: String },
    #[error("`{param}`: the superiors' `{op}` conflict")]
    Conflict { param: String, op: String },
    #[error("`{param}`: `{a}` and `{b}` cannot hold together")]
    Combination { param: String, a: String, b: String },
    #[error("`{param}`: the metadata value is not allowed by `{op}`")]
    Violation { param: String, op: String },
    #[error("`{param}` is essential and missing")]
    Essential { param: String },
    #[error("the policy of `{0}` is not an object of operators")]
    NotOperators(String),
}

fn as_ops<'a>(param: &str, v: &'a Value) -> Result<&'a Operators, PolicyError> {
    v.as_object()
        .ok_or_else(|| PolicyError::NotOperators(param.to_string()))
}

fn array<'a>(param: &str, op: &str, v: &'a Value) -> Result<&'a Vec<Value>, PolicyError> {
    v.as_array().ok_or_else(|| PolicyError::OperatorType {
        param: param.into(),
        op: op.into(),
    })
}

/// The values of a metadata parameter as a list (a single value is a list of one).
fn values(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn intersection(a: &[Value], b: &[Value]) -> Vec<Value> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

fn union(a: &[Value], b: &[Value]) -> Vec<Value> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

fn subset(a: &[Value], of: &[Value]) -> bool {
    a.iter().all(|x| of.contains(x))
}

/// Checks one parameter's operators: known, of the right type, and legal together
/// (§6.1.3.2).
pub fn check(param: &str, ops: &Operators) -> Result<(), PolicyError> {
    for (op, v) in ops {
        let ok = match op.as_str() {
            "value" | "default" => true,
            "add" | "one_of" | "subset_of" | "superset_of" => v.is_array(),
            "essential" => v.is_boolean(),
            _ => {
                return Err(PolicyError::UnknownOperator {
                    param: param.into(),
                    op: op.clone(),
                });
            }
        };
        if !ok {
            return Err(PolicyError::OperatorType {
                param: param.into(),
                op: op.clone(),
            });
        }
    }
    let combo = |a: &str, b: &str| PolicyError::Combination {
        param: param.into(),
        a: a.into(),
        b: b.into(),
    };
    let list = |op: &str| ops.get(op).and_then(Value::as_array);
    if let Some(value) = ops.get("value") {
        let vals = values(value);
        if let Some(add) = list("add")
            && (!value.is_array() || !subset(add, &vals))
        {
            return Err(combo("value", "add"));
        }
        if let Some(default) = ops.get("default")
            && value.is_null()
            && !default.is_null()
        {
            return Err(combo("value", "default"));
        }
        if let Some(one_of) = list("one_of")
            && !value.is_null()
            && !one_of.contains(value)
        {
            return Err(combo("value", "one_of"));
        }
        if let Some(s) = list("subset_of")
            && !value.is_null()
            && !subset(&vals, s)
        {
            return Err(combo("value", "subset_of"));
        }
        if let Some(s) = list("superset_of")
            && !value.is_null()
            && !subset(s, &vals)
        {
            return Err(combo("value", "superset_of"));
        }
        if value.is_null() && ops.get("essential") == Some(&Value::Bool(true)) {
            return Err(combo("value", "essential"));
        }
    }
    if let Some(add) = list("add") {
        if let Some(s) = list("subset_of")
            && !subset(add, s)
        {
            return Err(combo("add", "subset_of"));
        }
        if ops.contains_key("one_of") {
            return Err(combo("add", "one_of"));
        }
    }
    if let Some(default) = ops.get("default") {
        if let Some(one_of) = list("one_of")
            && !one_of.contains(default)
        {
            return Err(combo("default", "one_of"));
        }
        if let Some(s) = list("subset_of")
            && !subset(&values(default), s)
        {
            return Err(combo("default", "subset_of"));
        }
        if let Some(s) = list("superset_of")
            && !subset(s, &values(default))
        {
            return Err(combo("default", "superset_of"));
        }
    }
    if ops.contains_key("one_of")
        && (ops.contains_key("subset_of") || ops.contains_key("superset_of"))
    {
        return Err(combo("one_of", "subset_of/superset_of"));
    }
    if let (Some(sub), Some(sup)) = (list("subset_of"), list("superset_of"))
        && !subset(sup, sub)
    {
        return Err(combo("subset_of", "superset_of"));
    }
    Ok(())
}

/// Combines a superior's policy with its subordinate's (§6.1.4.1): `value` and `default`
/// must agree, `add` and `superset_of` are united, `one_of` and `subset_of` intersected,
/// `essential` is true if either says so. The result is checked as a whole.
pub fn merge(superior: &Policy, subordinate: &Policy) -> Result<Policy, PolicyError> {
    let mut out = superior.clone();
    for (param, sub_ops) in subordinate {
        let sub_ops = as_ops(param, sub_ops)?;
        check(param, sub_ops)?;
        let Some(sup_ops) = superior.get(param) else {
            out.insert(param.clone(), Value::Object(sub_ops.clone()));
            continue;
        };
        let sup_ops = as_ops(param, sup_ops)?;
        check(param, sup_ops)?;
        let mut merged = sup_ops.clone();
        for (op, v) in sub_ops {
            let conflict = || PolicyError::Conflict {
                param: param.clone(),
                op: op.clone(),
            };
            let combined = match (op.as_str(), sup_ops.get(op)) {
                (_, None) => v.clone(),
                ("value" | "default", Some(s)) => {
                    if s != v {
                        return Err(conflict());
                    }
                    v.clone()
                }
                ("add" | "superset_of", Some(s)) => {
                    Value::Array(union(array(param, op, s)?, array(param, op, v)?))
                }
                ("one_of" | "subset_of", Some(s)) => {
                    let i = intersection(array(param, op, s)?, array(param, op, v)?);
                    if i.is_empty() && op == "one_of" {
                        return Err(conflict());
                    }
                    Value::Array(i)
                }
                ("essential", Some(s)) => {
                    Value::Bool(s.as_bool().unwrap_or(false) || v.as_bool().unwrap_or(false))
                }
                _ => {
                    return Err(PolicyError::UnknownOperator {
                        param: param.clone(),
                        op: op.clone(),
                    });
                }
            };
            merged.insert(op.clone(), combined);
        }
        check(param, &merged)?;
        out.insert(param.clone(), Value::Object(merged));
    }
    Ok(out)
}

/// Applies a (merged) policy to an entity's metadata (§6.1.4.2), operators in the order
/// `value`, `add`, `default`, then the checks `one_of`, `subset_of` (which also narrows the
/// value), `superset_of`, `essential`.
pub fn apply(
    policy: &Policy,
    metadata: &Map<String, Value>,
) -> Result<Map<String, Value>, PolicyError> {
    let mut out = metadata.clone();
    for (param, ops) in policy {
        let ops = as_ops(param, ops)?;
        check(param, ops)?;
        for op in ops.keys() {
            if !OPERATORS.contains(&op.as_str()) {
                return Err(PolicyError::UnknownOperator {
                    param: param.clone(),
                    op: op.clone(),
                });
            }
        }
        let violation = |op: &str| PolicyError::Violation {
            param: param.clone(),
            op: op.into(),
        };
        if let Some(v) = ops.get("value") {
            if v.is_null() {
                out.remove(param);
            } else {
                out.insert(param.clone(), v.clone());
            }
        }
        if let Some(add) = ops.get("add").and_then(Value::as_array) {
            let current = out.get(param).map(values).unwrap_or_default();
            out.insert(param.clone(), Value::Array(union(&current, add)));
        }
        if let Some(d) = ops.get("default")
            && !out.contains_key(param)
        {
            out.insert(param.clone(), d.clone());
        }
        if let Some(one_of) = ops.get("one_of").and_then(Value::as_array)
            && let Some(v) = out.get(param)
            && !one_of.contains(v)
        {
            return Err(violation("one_of"));
        }
        if let Some(s) = ops.get("subset_of").and_then(Value::as_array)
            && let Some(v) = out.get(param)
        {
            if !v.is_array() {
                return Err(violation("subset_of"));
            }
            let narrowed = intersection(&values(v), s);
            if narrowed.is_empty() {
                out.remove(param);
            } else {
                out.insert(param.clone(), Value::Array(narrowed));
            }
        }
        if let Some(s) = ops.get("superset_of").and_then(Value::as_array)
            && let Some(v) = out.get(param)
            && !subset(s, &values(v))
        {
            return Err(violation("superset_of"));
        }
        if ops.get("essential") == Some(&Value::Bool(true)) && !out.contains_key(param) {
            return Err(PolicyError::Essential {
                param: param.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
