//! Server-side apply (`application/apply-patch+yaml`): upsert, merge of the
//! applied configuration into the live object, and `managedFields`
//! bookkeeping per field manager with conflict detection.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::errors::{ApiError, ApiResult};
use super::http::Body;
use super::objects::{meta_mut, meta_str, now_rfc3339};
use super::registry::Registry;
use super::{Api, Ctx, Target, bytes_response, handlers, openapi};

pub async fn server_side_apply(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
    sub: Option<&str>,
    dry: bool,
) -> ApiResult<Response<Body>> {
    let manager = ctx
        .query
        .get("fieldManager")
        .ok_or_else(|| {
            ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        })?
        .to_string();
    let force = ctx.query.flag("force");
    let mut applied: Value = serde_yaml::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let gv = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
    if gv.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'apiVersion' and 'Kind' are missing in the applied configuration",
        ));
    }
    if kind != t.info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            t.info.kind
        )));
    }
    let name = t.name.clone().unwrap_or_default();
    match meta_str(&applied, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {
            meta_mut(&mut applied).insert("name".into(), json!(name));
        }
    }
    let owned = fieldset(&applied, &t.info.definition, reg, &t.info);
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": t.info.gv(),
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": owned,
    });

    for attempt in 0..8 {
        let Some(current) = api.cache.get(&t.key()) else {
            if sub.is_some() {
                return Err(ApiError::not_found(&t.info.group, &t.info.resource, &name));
            }
            let mut obj = applied.clone();
            meta_mut(&mut obj).insert("managedFields".into(), json!([entry.clone()]));
            let created =
                handlers::create_object(api, &t.info, t.namespace.as_deref(), obj, dry).await?;
            return Ok(bytes_response(
                StatusCode::CREATED,
                "application/json",
                handlers::view(&t.info, &created),
            ));
        };
        let live = handlers::view_value(&t.info, &current);
        let mut managed: Vec<Value> = live
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Conflicts: a leaf another manager set to a different value.
        let mut conflicts = Vec::new();
        for m in &managed {
            let other = m.get("manager").and_then(Value::as_str).unwrap_or("");
            if other == manager {
                continue;
            }
            let theirs = m.get("fieldsV1").cloned().unwrap_or(json!({}));
            for (path, ptr) in leaves(&owned, "", "") {
                if has_path(&theirs, &path)
                    && let Some(ptr) = ptr
                    && live.pointer(&ptr) != applied.pointer(&ptr)
                {
                    conflicts.push((other.to_string(), ptr_to_field(&ptr)));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
                .collect();
            let msg = if conflicts.len() == 1 {
                format!(
                    "Apply failed with 1 conflict: conflict with \"{}\": {}",
                    conflicts[0].0, conflicts[0].1
                )
            } else {
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    conflicts
                        .iter()
                        .map(|(m, f)| format!("conflict with \"{m}\": {f}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            };
            return Err(ApiError::new(409, "Conflict", msg).with_details(
                json!({"name": name, "group": t.info.group, "kind": t.info.resource, "causes": causes}),
            ));
        }
        // Fields this manager applied before but no longer does, and that
        // nobody else owns, are removed.
        let previous = managed
            .iter()
            .find(|m| {
                m.get("manager").and_then(Value::as_str) == Some(manager.as_str())
                    && m.get("operation").and_then(Value::as_str) == Some("Apply")
            })
            .and_then(|m| m.get("fieldsV1").cloned())
            .unwrap_or(json!({}));
        let mut merged = live.clone();
        for (path, ptr) in leaves(&previous, "", "") {
            let still_mine = has_path(&owned, &path);
            let others = managed.iter().any(|m| {
                m.get("manager").and_then(Value::as_str) != Some(manager.as_str())
                    && has_path(m.get("fieldsV1").unwrap_or(&Value::Null), &path)
            });
            if !still_mine
                && !others
                && let Some(ptr) = ptr
            {
                remove_pointer(&mut merged, &ptr);
            }
        }
        let mut patch = applied.clone();
        if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        merged = if reg.crd(&t.info).is_some() {
            let mut d = merged;
            merge_values(&mut d, &patch);
            d
        } else {
            super::strategic::apply(
                &merged,
                &patch,
                openapi::definitions(),
                t.info.definition.as_deref(),
            )
            .map_err(|e| ApiError::new(422, "Invalid", e))?
        };
        // Ownership: forced conflicts move to this manager.
        if force {
            for m in managed.iter_mut() {
                if m.get("manager").and_then(Value::as_str) == Some(manager.as_str()) {
                    continue;
                }
                if let Some(f) = m.get_mut("fieldsV1") {
                    for (path, _) in leaves(&owned, "", "") {
                        remove_path(f, &path);
                    }
                }
            }
            managed.retain(|m| {
                m.get("fieldsV1")
                    .and_then(Value::as_object)
                    .is_some_and(|o| !o.is_empty())
            });
        }
        managed.retain(|m| {
            !(m.get("manager").and_then(Value::as_str) == Some(manager.as_str())
                && m.get("operation").and_then(Value::as_str) == Some("Apply"))
        });
        managed.push(entry.clone());
        meta_mut(&mut merged).insert("managedFields".into(), Value::Array(managed));
        match handlers::write_update(api, t, current, merged, None, sub, dry).await {
            Ok((status, obj)) => {
                return Ok(bytes_response(
                    status,
                    "application/json",
                    handlers::view(&t.info, &obj),
                ));
            }
            Err(e) if e.reason == "Conflict" && attempt < 7 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&t.info.group, &t.info.resource, &name))
}

fn merge_values(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_values(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The FieldsV1 set of an applied object: `f:<field>` for map fields,
/// `k:{...}` for list-map items (keys from the schema), leaves as `{}`.
fn fieldset(
    v: &Value,
    def: &Option<String>,
    reg: &Registry,
    info: &super::registry::ResourceInfo,
) -> Value {
    let _ = (reg, info);
    let defs = openapi::definitions();
    fields_of(v, def.as_deref().and_then(|d| defs.get(d)), defs, true)
}

fn resolve<'a>(s: Option<&'a Value>, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    let s = s?;
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return defs.get(r.rsplit('/').next().unwrap_or(""));
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array)
        && let Some(first) = all.first()
    {
        return resolve(Some(first), defs);
    }
    Some(s)
}

fn fields_of(v: &Value, schema: Option<&Value>, defs: &Map<String, Value>, root: bool) -> Value {
    let schema = resolve(schema, defs);
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, child) in o {
                if root && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if root && k == "metadata" {
                    let mut m = Map::new();
                    for mk in ["labels", "annotations"] {
                        if let Some(Value::Object(x)) = child.get(mk) {
                            let inner: Map<String, Value> =
                                x.keys().map(|k| (format!("f:{k}"), json!({}))).collect();
                            m.insert(format!("f:{mk}"), Value::Object(inner));
                        }
                    }
                    if !m.is_empty() {
                        out.insert("f:metadata".into(), Value::Object(m));
                    }
                    continue;
                }
                let child_schema = schema.and_then(|s| {
                    s.get("properties")
                        .and_then(|p| p.get(k))
                        .or_else(|| s.get("additionalProperties"))
                });
                out.insert(
                    format!("f:{k}"),
                    fields_of(child, child_schema, defs, false),
                );
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let s = schema;
            let keys: Vec<String> = s
                .and_then(|s| {
                    s.get("x-kubernetes-list-map-keys").or_else(|| {
                        s.get("x-kubernetes-patch-merge-key")
                            .map(|_| s.get("x-kubernetes-patch-merge-key").unwrap())
                    })
                })
                .map(|k| match k {
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    _ => vec![],
                })
                .unwrap_or_default();
            let list_type = s
                .and_then(|s| s.get("x-kubernetes-list-type"))
                .and_then(Value::as_str);
            let item_schema = s.and_then(|s| s.get("items"));
            if !keys.is_empty() && items.iter().all(Value::is_object) {
                let mut out = Map::new();
                for it in items {
                    let kv: Map<String, Value> = keys
                        .iter()
                        .filter_map(|k| it.get(k).map(|x| (k.clone(), x.clone())))
                        .collect();
                    let mut inner = fields_of(it, item_schema, defs, false);
                    if let Some(o) = inner.as_object_mut() {
                        o.insert(".".into(), json!({}));
                    }
                    out.insert(format!("k:{}", Value::Object(kv)), inner);
                }
                Value::Object(out)
            } else if list_type == Some("set") {
                let out: Map<String, Value> = items
                    .iter()
                    .map(|i| (format!("v:{i}"), json!({})))
                    .collect();
                Value::Object(out)
            } else {
                json!({})
            }
        }
        _ => json!({}),
    }
}

/// Leaf paths of a FieldsV1 set, with the JSON pointer when the path has
/// no list-item step (those are only tracked, not pointed at).
fn leaves(set: &Value, path: &str, ptr: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    if let Some(o) = set.as_object() {
        let real: Vec<(&String, &Value)> = o.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if real.is_empty() {
            out.push((
                path.to_string(),
                (!ptr.contains('\u{0}')).then(|| ptr.to_string()),
            ));
            return out;
        }
        for (k, v) in real {
            let p = format!("{path}/{k}");
            let np = match k.strip_prefix("f:") {
                Some(f) => format!("{ptr}/{}", f.replace('~', "~0").replace('/', "~1")),
                None => format!("{ptr}\u{0}"),
            };
            out.extend(leaves(v, &p, &np));
        }
    }
    out
}

fn has_path(set: &Value, path: &str) -> bool {
    let mut cur = set;
    for part in path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
    {
        match cur.get(part) {
            Some(n) => cur = n,
            None => return false,
        }
    }
    true
}

fn remove_path(set: &mut Value, path: &str) {
    let parts: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    fn rec(v: &mut Value, parts: &[&str]) {
        let Some((first, rest)) = parts.split_first() else {
            return;
        };
        let Some(o) = v.as_object_mut() else { return };
        if rest.is_empty() {
            o.remove(*first);
            return;
        }
        if let Some(child) = o.get_mut(*first) {
            rec(child, rest);
            if child.as_object().is_some_and(|c| c.is_empty()) {
                o.remove(*first);
            }
        }
    }
    rec(set, &parts);
}

fn remove_pointer(v: &mut Value, ptr: &str) {
    if let Some((parent, last)) = ptr.rsplit_once('/') {
        let last = last.replace("~1", "/").replace("~0", "~");
        if let Some(o) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
            o.remove(&last);
        }
    }
}

fn ptr_to_field(ptr: &str) -> String {
    format!(".{}", ptr.trim_start_matches('/').replace('/', "."))
}
