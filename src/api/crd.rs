//! CustomResourceDefinitions: each CRD in the store becomes served
//! resources (discovery, OpenAPI, REST) as soon as its event reaches the
//! cache, and gets the `NamesAccepted` and `Established` conditions.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Api;
use super::cache::Obj;
use super::registry::{CrdVersion, Registry, ResourceInfo, SubresourceInfo};

const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Rebuilds the registry from the built-in catalogue and every CRD.
pub fn rebuild(api: &Api) {
    let (crds, _) = api.cache.list(PREFIX, None);
    let mut reg = Registry::new(super::openapi::resources_builtin());
    let old_gen = api.registry().generation;
    for crd in &crds {
        if crd.meta.deleting {
            continue;
        }
        add_crd(&mut reg, &crd.value());
    }
    reg.generation = old_gen + 1;
    api.set_registry(reg);
}

fn add_crd(reg: &mut Registry, crd: &Value) {
    let spec = match crd.get("spec") {
        Some(s) => s,
        None => return,
    };
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let names = spec.get("names").cloned().unwrap_or(json!({}));
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return;
    }
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in versions {
        if v.get("served") == Some(&json!(false)) {
            continue;
        }
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut subs = Vec::new();
        let status = v.pointer("/subresources/status").is_some();
        let scale = v.pointer("/subresources/scale").map(|s| {
            (
                s.get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                s.get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .to_string(),
                s.get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        });
        if status {
            subs.push(SubresourceInfo {
                name: "status".into(),
                group: group.clone(),
                version: version.clone(),
                kind: kind.clone(),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        if scale.is_some() {
            subs.push(SubresourceInfo {
                name: "scale".into(),
                group: "autoscaling".into(),
                version: "v1".into(),
                kind: "Scale".into(),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        let info = ResourceInfo {
            group: group.clone(),
            version: version.clone(),
            resource: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced,
            short_names: strs(names.get("shortNames")),
            categories: strs(names.get("categories")),
            verbs: vec![],
            subresources: subs,
            definition: None,
            storage: None,
        };
        reg.crds.insert(
            (group.clone(), version.clone(), plural.clone()),
            CrdVersion {
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                scale,
            },
        );
        reg.resources.push(Arc::new(info));
    }
}

/// Keeps the registry in step with the CRDs and marks them Established.
pub async fn run(api: Arc<Api>) {
    rebuild(&api);
    establish_all(&api).await;
    let Ok(mut rx) = api.cache.watch_changes().await else {
        return;
    };
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if ev.key.starts_with(PREFIX) {
                    rebuild(&api);
                    if let Some(o) = &ev.obj {
                        establish(&api, o).await;
                    } else if let Some(p) = &ev.prev {
                        // CRD gone: its objects go too.
                        delete_instances(&api, &p.value()).await;
                    }
                }
            }
            // Behind the in-memory history: start over from now.
            Err(crate::store::StoreError::Compacted { .. }) => {
                rebuild(&api);
                establish_all(&api).await;
                match api.cache.watch_changes().await {
                    Ok(r) => rx = r,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        }
    }
}

async fn establish_all(api: &Arc<Api>) {
    let (crds, _) = api.cache.list(PREFIX, None);
    for c in crds {
        establish(api, &c).await;
    }
}

async fn establish(api: &Arc<Api>, crd: &Arc<Obj>) {
    let v = &crd.value();
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        // Remove the customresourcecleanup finalizer after deleting instances.
        delete_instances(api, v).await;
        let mut new = v.clone();
        if let Some(f) = new
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != "customresourcecleanup.apiextensions.k8s.io");
        }
        let _ = write_back(api, crd, new).await;
        return;
    }
    let established = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Established"))
                    && c.get("status") == Some(&json!("True"))
            })
        });
    let has_finalizer = v
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.contains(&json!("customresourcecleanup.apiextensions.k8s.io")));
    if established && has_finalizer {
        return;
    }
    let now = super::objects::now_rfc3339();
    let mut new = v.clone();
    let names = v.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        accepted["singular"] = json!(
            names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase()
        );
    }
    if accepted.get("listKind").is_none() {
        accepted["listKind"] = json!(format!(
            "{}List",
            names.get("kind").and_then(Value::as_str).unwrap_or("")
        ));
    }
    let stored: Vec<Value> = v
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|x| x.get("storage") == Some(&json!(true)))
                .filter_map(|x| x.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    new["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
    });
    if !has_finalizer {
        let m = super::objects::meta_mut(&mut new);
        let mut f = m
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        f.push(json!("customresourcecleanup.apiextensions.k8s.io"));
        m.insert("finalizers".into(), Value::Array(f));
    }
    let _ = write_back(api, crd, new).await;
}

async fn write_back(
    api: &Arc<Api>,
    crd: &Arc<Obj>,
    mut new: Value,
) -> Result<(), crate::store::StoreError> {
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let empty_finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty());
    let op = if new.pointer("/metadata/deletionTimestamp").is_some() && empty_finalizers {
        crate::store::Op::Delete {
            key: crd.key.clone(),
            expected: Some(crd.mod_revision),
        }
    } else {
        crate::store::Op::Update {
            key: crd.key.clone(),
            value: bytes::Bytes::from(serde_json::to_vec(&new).unwrap_or_default()),
            expected: Some(crd.mod_revision),
        }
    };
    api.cache.backend().write(op).await.map(|_| ())
}

async fn delete_instances(api: &Arc<Api>, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return;
    }
    let prefix = format!("/registry/{group}/{plural}/");
    let (items, _) = api.cache.list(&prefix, None);
    for o in items {
        let _ = api
            .cache
            .backend()
            .write(crate::store::Op::Delete {
                key: o.key.clone(),
                expected: None,
            })
            .await;
    }
}
