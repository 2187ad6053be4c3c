//! Admission for namespaced creates: LimitRange (container defaults, then
//! min/max) and ResourceQuota (object counts and compute resources), with
//! upstream's messages; plus the quota status (`status.used`) refresh.
//!
//! Usage is computed from the watch cache at admission time. Two creates
//! racing past the same quota in the same instant can both pass (upstream
//! serializes through a CAS on `status.used`); the refresh then shows the
//! overshoot.

use serde_json::{Map, Value, json};

use super::Api;
use super::errors::{ApiError, ApiResult, qualified};
use super::objects::meta_str;
use super::registry::ResourceInfo;
use crate::quantity::quantity_scaled;

const COMPUTE: [&str; 2] = ["cpu", "memory"];

/// A quota key over its limit: (key, requested, used, hard).
type Over = (String, i64, i64, i64);

/// Milli-units for cpu, units for everything else.
fn amount(resource: &str, q: &str) -> Option<i64> {
    if resource.ends_with("cpu") {
        quantity_scaled(q, 3)
    } else {
        quantity_scaled(q, 0)
    }
}

fn containers_mut(pod: &mut Value) -> Vec<&mut Map<String, Value>> {
    let mut out = Vec::new();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        for (field, list) in spec.iter_mut() {
            if (field == "containers" || field == "initContainers")
                && let Some(a) = list.as_array_mut()
            {
                out.extend(a.iter_mut().filter_map(Value::as_object_mut));
            }
        }
    }
    out
}

fn forbidden(info: &ResourceInfo, name: &str, msg: String) -> ApiError {
    ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {msg}",
        qualified(&info.group, &info.resource)
    ))
}

pub fn admit(api: &Api, info: &ResourceInfo, ns: &str, obj: &mut Value) -> ApiResult<()> {
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    if info.group.is_empty() && info.kind == "Pod" {
        limit_ranges(api, info, ns, &name, obj)?;
    }
    quotas(api, info, ns, &name, obj)
}

fn limit_ranges(
    api: &Api,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    let (ranges, _) = api
        .cache
        .list(&format!("/registry/core/limitranges/{ns}/"), None);
    let mut set: Vec<String> = Vec::new();
    for lr in &ranges {
        let items = lr
            .value()
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for item in items
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
        {
            for c in containers_mut(pod) {
                let cname = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let res = c.entry("resources").or_insert_with(|| json!({}));
                let (mut req_set, mut lim_set) = (Vec::new(), Vec::new());
                for (field, default_key) in [("requests", "defaultRequest"), ("limits", "default")]
                {
                    if let Some(defaults) = item.get(default_key).and_then(Value::as_object) {
                        for (r, q) in defaults {
                            let m = res
                                .as_object_mut()
                                .map(|o| o.entry(field).or_insert_with(|| json!({})));
                            if let Some(Value::Object(m)) = m
                                && !m.contains_key(r)
                            {
                                m.insert(r.clone(), q.clone());
                                if field == "limits" {
                                    lim_set.push(r.clone())
                                } else {
                                    req_set.push(r.clone())
                                }
                            }
                        }
                    }
                }
                // Upstream's annotation: "cpu, memory request for container c; cpu limit for container c".
                if !req_set.is_empty() {
                    set.push(format!(
                        "{} request for container {cname}",
                        req_set.join(", ")
                    ));
                }
                if !lim_set.is_empty() {
                    set.push(format!(
                        "{} limit for container {cname}",
                        lim_set.join(", ")
                    ));
                }
                for r in COMPUTE {
                    let req = res
                        .pointer(&format!("/requests/{r}"))
                        .and_then(Value::as_str)
                        .and_then(|q| amount(r, q));
                    let lim = res
                        .pointer(&format!("/limits/{r}"))
                        .and_then(Value::as_str)
                        .and_then(|q| amount(r, q));
                    if let Some(min) = item.pointer(&format!("/min/{r}")).and_then(Value::as_str) {
                        let m = amount(r, min).unwrap_or(0);
                        match req {
                            Some(v) if v < m => {
                                return Err(forbidden(
                                    info,
                                    name,
                                    format!(
                                        "minimum {r} usage per Container is {min}, but request is {}",
                                        res.pointer(&format!("/requests/{r}"))
                                            .and_then(Value::as_str)
                                            .unwrap_or("")
                                    ),
                                ));
                            }
                            None => {
                                return Err(forbidden(
                                    info,
                                    name,
                                    format!(
                                        "minimum {r} usage per Container is {min}.  No request is specified"
                                    ),
                                ));
                            }
                            _ => {}
                        }
                    }
                    if let Some(max) = item.pointer(&format!("/max/{r}")).and_then(Value::as_str) {
                        let m = amount(r, max).unwrap_or(i64::MAX);
                        match lim {
                            Some(v) if v > m => {
                                return Err(forbidden(
                                    info,
                                    name,
                                    format!(
                                        "maximum {r} usage per Container is {max}, but limit is {}",
                                        res.pointer(&format!("/limits/{r}"))
                                            .and_then(Value::as_str)
                                            .unwrap_or("")
                                    ),
                                ));
                            }
                            None => {
                                return Err(forbidden(
                                    info,
                                    name,
                                    format!(
                                        "maximum {r} usage per Container is {max}.  No limit is specified"
                                    ),
                                ));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    if !set.is_empty()
        && let Some(m) = pod.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let ann = m.entry("annotations").or_insert_with(|| json!({}));
        ann["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", set.join("; ")));
    }
    Ok(())
}

/// What one object adds to each quota key.
fn usage_of(info: &ResourceInfo, obj: &Value) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let count_key = if info.group.is_empty() {
        format!("count/{}", info.resource)
    } else {
        format!("count/{}.{}", info.resource, info.group)
    };
    out.push((count_key, 1));
    if info.group.is_empty() {
        match info.resource.as_str() {
            "pods" => {
                let terminal = matches!(
                    obj.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                if terminal {
                    return Vec::new();
                }
                out.push(("pods".into(), 1));
                let mut obj = obj.clone();
                for r in COMPUTE {
                    let (mut req, mut lim) = (0, 0);
                    for c in containers_mut(&mut obj) {
                        req += c
                            .get("resources")
                            .and_then(|x| x.pointer(&format!("/requests/{r}")))
                            .and_then(Value::as_str)
                            .and_then(|q| amount(r, q))
                            .unwrap_or(0);
                        lim += c
                            .get("resources")
                            .and_then(|x| x.pointer(&format!("/limits/{r}")))
                            .and_then(Value::as_str)
                            .and_then(|q| amount(r, q))
                            .unwrap_or(0);
                    }
                    out.push((r.to_string(), req));
                    out.push((format!("requests.{r}"), req));
                    out.push((format!("limits.{r}"), lim));
                }
            }
            "services" => {
                out.push(("services".into(), 1));
                match obj.pointer("/spec/type").and_then(Value::as_str) {
                    Some("NodePort") => out.push((
                        "services.nodeports".into(),
                        obj.pointer("/spec/ports")
                            .and_then(Value::as_array)
                            .map_or(0, |p| p.len() as i64),
                    )),
                    Some("LoadBalancer") => out.push(("services.loadbalancers".into(), 1)),
                    _ => {}
                }
            }
            "configmaps"
            | "secrets"
            | "persistentvolumeclaims"
            | "replicationcontrollers"
            | "resourcequotas" => {
                out.push((info.resource.clone(), 1));
                if info.resource == "persistentvolumeclaims" {
                    let s = obj
                        .pointer("/spec/resources/requests/storage")
                        .and_then(Value::as_str)
                        .and_then(|q| amount("storage", q))
                        .unwrap_or(0);
                    out.push(("requests.storage".into(), s));
                }
            }
            _ => {}
        }
    }
    out
}

fn format_amount(key: &str, v: i64) -> String {
    if key.ends_with("cpu") {
        if v % 1000 == 0 {
            (v / 1000).to_string()
        } else {
            format!("{v}m")
        }
    } else if key.ends_with("memory") || key.ends_with("storage") {
        for (suffix, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if v != 0 && v % (1i64 << shift) == 0 {
                return format!("{}{suffix}", v >> shift);
            }
        }
        v.to_string()
    } else {
        v.to_string()
    }
}

/// Current usage in `ns` for the keys of `hard`.
fn usage(api: &Api, ns: &str, hard: &Map<String, Value>) -> Map<String, Value> {
    let reg = api.registry();
    let mut totals: std::collections::HashMap<String, i64> = Default::default();
    let mut seen = std::collections::HashSet::new();
    for info in reg
        .resources
        .iter()
        .filter(|r| r.namespaced && r.is_stored())
    {
        if !seen.insert(info.storage_prefix()) {
            continue;
        }
        let relevant = hard.keys().any(|k| usage_key_matches(info, k));
        if !relevant {
            continue;
        }
        let (items, _) = api
            .cache
            .list(&format!("{}{ns}/", info.storage_prefix()), None);
        for o in items {
            for (k, v) in usage_of(info, &o.value()) {
                *totals.entry(k).or_default() += v;
            }
        }
    }
    hard.keys()
        .map(|k| {
            (
                k.clone(),
                json!(format_amount(k, totals.get(k).copied().unwrap_or(0))),
            )
        })
        .collect()
}

fn usage_key_matches(info: &ResourceInfo, key: &str) -> bool {
    let count = if info.group.is_empty() {
        format!("count/{}", info.resource)
    } else {
        format!("count/{}.{}", info.resource, info.group)
    };
    key == count
        || (info.group.is_empty()
            && match info.resource.as_str() {
                "pods" => matches!(
                    key,
                    "pods"
                        | "cpu"
                        | "memory"
                        | "requests.cpu"
                        | "requests.memory"
                        | "limits.cpu"
                        | "limits.memory"
                ),
                "services" => key.starts_with("services"),
                "persistentvolumeclaims" => {
                    key == "persistentvolumeclaims" || key == "requests.storage"
                }
                r => key == r,
            })
}

fn quotas(api: &Api, info: &ResourceInfo, ns: &str, name: &str, obj: &Value) -> ApiResult<()> {
    let (quotas, _) = api
        .cache
        .list(&format!("/registry/core/resourcequotas/{ns}/"), None);
    if quotas.is_empty() {
        return Ok(());
    }
    let delta = usage_of(info, obj);
    for q in &quotas {
        let qv = q.value();
        let Some(hard) = qv.pointer("/spec/hard").and_then(Value::as_object) else {
            continue;
        };
        let qname = q.name().unwrap_or("");
        let relevant: Vec<&(String, i64)> =
            delta.iter().filter(|(k, _)| hard.contains_key(k)).collect();
        if relevant.is_empty() {
            continue;
        }
        // Compute resources under quota must be stated, as upstream.
        if info.group.is_empty() && info.kind == "Pod" {
            let missing: Vec<&str> = [
                "requests.cpu",
                "requests.memory",
                "limits.cpu",
                "limits.memory",
                "cpu",
                "memory",
            ]
            .into_iter()
            .filter(|k| hard.contains_key(*k))
            .filter(|k| {
                let (field, r) = match k.split_once('.') {
                    Some((f, r)) => (f, r),
                    None => ("requests", *k),
                };
                let mut o = obj.clone();
                containers_mut(&mut o).iter().any(|c| {
                    c.get("resources")
                        .and_then(|x| x.pointer(&format!("/{field}/{r}")))
                        .is_none()
                })
            })
            .collect();
            if !missing.is_empty() {
                return Err(forbidden(
                    info,
                    name,
                    format!("failed quota: {qname}: must specify {}", missing.join(",")),
                ));
            }
        }
        let used = usage(api, ns, hard);
        let mut over = Vec::new();
        for (k, d) in &relevant {
            let limit = hard
                .get(k)
                .and_then(Value::as_str)
                .and_then(|q| amount(k, q))
                .unwrap_or(i64::MAX);
            let now = used
                .get(k)
                .and_then(Value::as_str)
                .and_then(|q| amount(k, q))
                .unwrap_or(0);
            if now + d > limit {
                over.push((k.clone(), *d, now, limit));
            }
        }
        if !over.is_empty() {
            let part =
                |f: &dyn Fn(&Over) -> String| over.iter().map(f).collect::<Vec<_>>().join(",");
            return Err(forbidden(
                info,
                name,
                format!(
                    "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    part(&|o| format!("{}={}", o.0, format_amount(&o.0, o.1))),
                    part(&|o| format!("{}={}", o.0, format_amount(&o.0, o.2))),
                    part(&|o| format!("{}={}", o.0, format_amount(&o.0, o.3))),
                ),
            ));
        }
    }
    Ok(())
}

/// Brings quotas' `status.hard`/`status.used` up to date.
/// Only quotas in `namespaces` are recomputed, when given: usage can change
/// only where something was written.
pub async fn refresh_quotas(api: &Api, namespaces: Option<&std::collections::HashSet<String>>) {
    let (quotas, _) = api.cache.list("/registry/core/resourcequotas/", None);
    for q in quotas {
        if let Some(nss) = namespaces
            && !q.namespace().is_some_and(|n| nss.contains(n))
        {
            continue;
        }
        let Some(hard) = q
            .value()
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .cloned()
        else {
            continue;
        };
        let ns = q.namespace().unwrap_or("").to_string();
        let used = usage(api, &ns, &hard);
        let status = json!({"hard": hard, "used": used});
        let mut new = q.value();
        if new.get("status") == Some(&status) {
            continue;
        }
        new["status"] = status;
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let _ = api
            .cache
            .backend()
            .write(crate::store::Op::Update {
                key: q.key.clone(),
                value: bytes::Bytes::from(serde_json::to_vec(&new).unwrap_or_default()),
                expected: Some(q.mod_revision),
            })
            .await;
    }
}
