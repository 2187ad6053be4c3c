//! Validation and defaulting of custom objects against their CRD's
//! OpenAPI v3 structural schema, with upstream's error wording.

use serde_json::{Value, json};

use super::errors::Cause;

/// Applies `default` values from the schema where fields are absent.
pub fn apply_defaults(v: &mut Value, schema: &Value) {
    let Some(o) = v.as_object_mut() else {
        if let (Some(items), Some(a)) = (schema.get("items"), v.as_array_mut()) {
            for x in a {
                apply_defaults(x, items);
            }
        }
        return;
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, ps) in props {
            if !o.contains_key(k)
                && let Some(d) = ps.get("default")
            {
                o.insert(k.clone(), d.clone());
            }
            if let Some(child) = o.get_mut(k) {
                apply_defaults(child, ps);
            }
        }
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        for (_, child) in o.iter_mut() {
            apply_defaults(child, ap);
        }
    }
}

/// Every violation of `schema` in `v`, skipping `apiVersion`, `kind` and
/// `metadata` at the root (the server validates those itself).
pub fn validate(v: &Value, schema: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    walk(v, schema, "", &mut out, true);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(v: &Value, s: &Value, path: &str, out: &mut Vec<Cause>, root: bool) {
    let field = if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    };
    if v.is_null() {
        if s.get("nullable") == Some(&json!(true)) || root {
            return;
        }
        if s.get("type").is_some() {
            out.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: field.clone(),
                message: format!(
                    "Invalid value: \"null\": {field} in body must be of type {}: \"null\"",
                    s["type"].as_str().unwrap_or("")
                ),
            });
        }
        return;
    }
    if s.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: field.clone(),
                message: format!(
                    "Invalid value: \"{}\": {field} in body must be of type integer,string: \"{}\"",
                    type_name(v),
                    type_name(v)
                ),
            });
        }
        return;
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = t == actual || (t == "number" && actual == "integer");
        if !ok {
            out.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: field.clone(),
                message: format!(
                    "Invalid value: \"{actual}\": {field} in body must be of type {t}: \"{actual}\""
                ),
            });
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        let allowed: Vec<String> = e.iter().map(|x| x.to_string()).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported",
            field: field.clone(),
            message: format!(
                "Unsupported value: {v}: supported values: {}",
                allowed.join(", ")
            ),
        });
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(Cause::invalid(
                field.clone(),
                v,
                &format!("{field} in body should be greater than or equal to {min}"),
            ));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(Cause::invalid(
                field.clone(),
                v,
                &format!("{field} in body should be less than or equal to {max}"),
            ));
        }
    }
    if let Some(st) = v.as_str() {
        let len = st.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.push(Cause::invalid(
                field.clone(),
                v,
                &format!("{field} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(Cause::invalid(
                field.clone(),
                v,
                &format!("{field} in body may not be longer than {max}"),
            ));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str)
            && let Ok(re) = regex::Regex::new(p)
            && !re.is_match(st)
        {
            out.push(Cause::invalid(
                field.clone(),
                v,
                &format!("{field} in body should match '{p}'"),
            ));
        }
    }
    match v {
        Value::Object(o) => {
            if let Some(req) = s.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !o.contains_key(r) {
                        let f = if path.is_empty() {
                            r.to_string()
                        } else {
                            format!("{path}.{r}")
                        };
                        out.push(Cause::required(f, ""));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, child) in o {
                if root && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(cs) = props.and_then(|ps| ps.get(k)) {
                    walk(child, cs, &p, out, false);
                } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    walk(child, ap, &p, out, false);
                }
            }
        }
        Value::Array(a) => {
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && (a.len() as u64) < min
            {
                out.push(Cause::invalid(
                    field.clone(),
                    v,
                    &format!("{field} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && (a.len() as u64) > max
            {
                out.push(Cause {
                    reason: "FieldValueTooMany",
                    field: field.clone(),
                    message: format!("Too many: {}: must have at most {max} items", a.len()),
                });
            }
            if let Some(items) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    walk(x, items, &format!("{path}[{i}]"), out, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_required_enum_minimum() {
        let s = json!({"type":"object","properties":{"spec":{"type":"object","required":["size"],
            "properties":{"size":{"type":"integer","minimum":0},"color":{"type":"string","enum":["red","blue"]}}}}});
        assert!(validate(&json!({"spec":{"size":1,"color":"red"}}), &s).is_empty());
        let c = validate(&json!({"spec":{"size":"big"}}), &s);
        assert_eq!(c[0].field, "spec.size");
        assert!(
            c[0].message.contains("must be of type integer"),
            "{}",
            c[0].message
        );
        assert_eq!(
            validate(&json!({"spec":{}}), &s)[0].reason,
            "FieldValueRequired"
        );
        assert_eq!(validate(&json!({"spec":{"size":-1}}), &s).len(), 1);
        assert_eq!(
            validate(&json!({"spec":{"size":1,"color":"pink"}}), &s)[0].reason,
            "FieldValueNotSupported"
        );
    }

    #[test]
    fn defaults_fill_absent_fields() {
        let s = json!({"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer","default":2}}}}});
        let mut v = json!({"spec":{}});
        apply_defaults(&mut v, &s);
        assert_eq!(v["spec"]["size"], 2);
    }
}
