//! API-server housekeeping: the objects every cluster has from its first
//! start, namespace finalization (deleting a namespace empties it, then
//! removes it), and the garbage collector for ownerReferences
//! (Background, Foreground and Orphan propagation).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::handlers::{self, DeleteOpts};
use super::{Api, Target};
use crate::store::StoreError;

fn target(
    api: &Api,
    group: &str,
    version: &str,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Target> {
    let info = api.registry().find(group, version, resource)?;
    Some(Target {
        info,
        namespace: ns.map(str::to_string),
        name: Some(name.to_string()),
        subresource: None,
    })
}

pub async fn bootstrap(api: &Arc<Api>, port: u16) -> anyhow::Result<()> {
    // Mark allocated service IPs so new allocations avoid them.
    let (svcs, _) = api.cache.list("/registry/core/services/", None);
    for s in &svcs {
        if let Some(ip) = s.value().pointer("/spec/clusterIP").and_then(Value::as_str) {
            api.service_ip.mark(ip);
        }
    }
    api.service_ip.mark("10.43.0.1");
    api.service_ip.mark("10.43.0.10");
    let ns_info = api
        .registry()
        .find("", "v1", "namespaces")
        .expect("namespaces in catalogue");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if api
            .cache
            .get(&format!("/registry/core/namespaces/{ns}"))
            .is_none()
        {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            handlers::create_object(api, &ns_info, None, obj, false)
                .await
                .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {}", e.message))?;
        }
    }
    let svc_info = api
        .registry()
        .find("", "v1", "services")
        .expect("services in catalogue");
    if api
        .cache
        .get("/registry/core/services/default/kubernetes")
        .is_none()
    {
        let obj = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.43.0.1", "type": "ClusterIP",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        });
        handlers::create_object(api, &svc_info, Some("default"), obj, false)
            .await
            .map_err(|e| anyhow::anyhow!("creating the kubernetes service: {}", e.message))?;
    }
    // Reserves the cluster DNS address, as k3s's CoreDNS Service does; the
    // agents serve it themselves (selectorless, so no endpoints).
    if api
        .cache
        .get("/registry/core/services/kube-system/kube-dns")
        .is_none()
    {
        let obj = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": "10.43.0.10", "type": "ClusterIP",
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
        });
        handlers::create_object(api, &svc_info, Some("kube-system"), obj, false)
            .await
            .map_err(|e| anyhow::anyhow!("creating the kube-dns service: {}", e.message))?;
    }
    Ok(())
}

/// Reacts to changes: runs namespace finalization and garbage collection
/// whenever anything changes, coalescing bursts.
pub async fn run(api: Arc<Api>) {
    let mut rx = match api.cache.watch_changes().await {
        Ok(rx) => rx,
        Err(_) => return,
    };
    loop {
        // Drain a burst, then act once, and only when something was deleted
        // or is being deleted (the only events that can leave work).
        let mut work = false;
        // Namespaces whose quota usage may have changed; None = all of them.
        let mut touched: Option<std::collections::HashSet<String>> = Some(Default::default());
        let mut behind = false;
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Ok(ev)) => note(&ev, &mut work, &mut touched),
            Ok(Err(StoreError::Compacted { .. })) => behind = true,
            Ok(Err(_)) => return,
            // Idle: a periodic pass catches anything a lagged receiver missed.
            Err(_) => {
                work = true;
                touched = None;
            }
        }
        while !behind {
            match rx.try_recv().await {
                Ok(Some(ev)) => note(&ev, &mut work, &mut touched),
                Ok(None) => break,
                Err(StoreError::Compacted { .. }) => behind = true,
                Err(_) => return,
            }
        }
        // Fell behind the in-memory history (a long GC pass): start over
        // from now; one full pass covers whatever was missed.
        if behind {
            rx = match api.cache.watch_changes().await {
                Ok(r) => r,
                Err(_) => return,
            };
            work = true;
            touched = None;
        }
        super::admission::refresh_quotas(&api, touched.as_ref()).await;
        if work {
            finalize_namespaces(&api).await;
            // GC steps enable each other (orphaning strips references, which
            // then lets the owner's finalizer go): repeat while it acts.
            for _ in 0..16 {
                if !collect_garbage(&api).await {
                    break;
                }
            }
        }
    }
}

/// Every stored namespaced resource, one entry per storage prefix.
fn namespaced_resources(api: &Api) -> Vec<Arc<super::registry::ResourceInfo>> {
    let reg = api.registry();
    let mut seen = std::collections::HashSet::new();
    reg.resources
        .iter()
        .filter(|r| r.namespaced && r.is_stored())
        .filter(|r| seen.insert(r.storage_prefix()))
        .cloned()
        .collect()
}

async fn finalize_namespaces(api: &Arc<Api>) {
    let (nss, _) = api.cache.list("/registry/core/namespaces/", None);
    for ns in nss {
        if !ns.meta.deleting {
            continue;
        }
        let name = ns.name().unwrap_or("").to_string();
        let mut remaining = 0;
        for info in namespaced_resources(api) {
            let prefix = format!("{}{}/", info.storage_prefix(), name);
            let (items, _) = api.cache.list(&prefix, None);
            for o in items {
                remaining += 1;
                if o.meta.deleting {
                    continue;
                }
                let t = Target {
                    info: info.clone(),
                    namespace: Some(name.clone()),
                    name: o.name().map(str::to_string),
                    subresource: None,
                };
                let opts = DeleteOpts {
                    grace: None,
                    propagation: Some("Background".into()),
                    uid: None,
                    rv: None,
                };
                let _ = handlers::delete_object(api, &t, &opts, false).await;
            }
        }
        if remaining > 0 {
            continue;
        }
        // Empty: drop the "kubernetes" finalizer, which deletes the namespace.
        let Some(t) = target(api, "", "v1", "namespaces", None, &name) else {
            continue;
        };
        let mut new = ns.value();
        new["spec"]["finalizers"] = json!([]);
        let _ = handlers::write_update(
            api,
            &Target {
                subresource: Some("finalize".into()),
                ..t.clone()
            },
            ns.clone(),
            new,
            None,
            Some("finalize"),
            false,
        )
        .await;
        if let Some(cur) = api.cache.get(&t.key()) {
            let cur_v = cur.value();
            let spec_f = cur_v
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty());
            let meta_f = cur_v
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty());
            if spec_f && meta_f {
                let _ = api
                    .cache
                    .backend()
                    .write(crate::store::Op::Delete {
                        key: cur.key.clone(),
                        expected: Some(cur.mod_revision),
                    })
                    .await;
            }
        }
    }
}

/// Deletes dependents whose owners are gone (Background), deletes the
/// dependents of owners in foreground deletion and then releases them, and
/// strips owner references for orphaning deletes.
async fn collect_garbage(api: &Arc<Api>) -> bool {
    let mut acted = false;
    let reg = api.registry();
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for info in reg.resources.iter().filter(|r| r.is_stored()) {
        if !seen.insert(info.storage_prefix()) {
            continue;
        }
        let (items, _) = api.cache.list(&info.storage_prefix(), None);
        for o in items {
            all.push((info.clone(), o));
        }
    }
    let live_uids: std::collections::HashMap<
        String,
        (Arc<super::registry::ResourceInfo>, Arc<super::cache::Obj>),
    > = all
        .iter()
        .filter_map(|(i, o)| o.uid().map(|u| (u.to_string(), (i.clone(), o.clone()))))
        .collect();
    let has_finalizer =
        |o: &super::cache::Obj, name: &str| o.meta.finalizers.iter().any(|f| &**f == name);
    // Owner uid → whether any of its dependents has blockOwnerDeletion.
    let mut dependents: std::collections::HashMap<&str, bool> = Default::default();
    for (_, d) in &all {
        for (owner, block) in &d.meta.owners {
            *dependents.entry(&**owner).or_default() |= *block;
        }
    }
    // Owners waiting on dependents.
    let mut blocking: std::collections::HashSet<String> = Default::default();
    for (info, o) in &all {
        let refs = &o.meta.owners;
        if refs.is_empty() {
            continue;
        }
        let mut orphan_from = Vec::new();
        let mut delete_me = false;
        let mut all_owners_gone = true;
        for (uid, blocks_owner) in refs {
            let uid: &str = uid;
            match live_uids.get(uid) {
                None => delete_me = true,
                Some((_, owner)) => {
                    all_owners_gone = false;
                    let deleting = owner.meta.deleting;
                    if deleting && has_finalizer(owner, "orphan") {
                        orphan_from.push(uid.to_string());
                    } else if deleting && has_finalizer(owner, "foregroundDeletion") {
                        // Every dependent goes; only those with
                        // blockOwnerDeletion hold the owner back.
                        if *blocks_owner {
                            blocking.insert(uid.to_string());
                        }
                        if !o.meta.deleting {
                            let t = Target {
                                info: info.clone(),
                                namespace: o.namespace().map(str::to_string),
                                name: o.name().map(str::to_string),
                                subresource: None,
                            };
                            let opts = DeleteOpts {
                                grace: None,
                                propagation: Some("Foreground".into()),
                                uid: None,
                                rv: None,
                            };
                            acted |= handlers::delete_object(api, &t, &opts, false).await.is_ok();
                        }
                    }
                }
            }
        }
        let t = Target {
            info: info.clone(),
            namespace: o.namespace().map(str::to_string),
            name: o.name().map(str::to_string),
            subresource: None,
        };
        if !orphan_from.is_empty() {
            let mut new = o.value();
            if let Some(a) = new
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                a.retain(|r| {
                    !orphan_from
                        .iter()
                        .any(|u| r.get("uid").and_then(Value::as_str) == Some(u))
                });
            }
            if new
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|a| a.is_empty())
                && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.remove("ownerReferences");
            }
            acted |= wrote(
                handlers::write_update(api, &t, o.clone(), new, None, None, false).await,
                o,
            );
        } else if delete_me && all_owners_gone && !o.meta.deleting {
            let opts = DeleteOpts {
                grace: None,
                propagation: Some("Background".into()),
                uid: None,
                rv: None,
            };
            acted |= handlers::delete_object(api, &t, &opts, false).await.is_ok();
        }
    }
    // Release owners whose orphaning or foreground work is done.
    for (info, o) in &all {
        if !o.meta.deleting {
            continue;
        }
        let f: Vec<String> = o.meta.finalizers.iter().map(|f| f.to_string()).collect();
        let uid = o.uid().unwrap_or("");
        let has_dependents = dependents.contains_key(uid);
        let has_blocking_dependents = dependents.get(uid) == Some(&true);
        let mut new_f = f.clone();
        if f.iter().any(|x| x == "orphan") && !has_dependents {
            new_f.retain(|x| x != "orphan");
        }
        if f.iter().any(|x| x == "foregroundDeletion")
            && !has_blocking_dependents
            && !blocking.contains(uid)
        {
            new_f.retain(|x| x != "foregroundDeletion");
        }
        if new_f != f {
            let t = Target {
                info: info.clone(),
                namespace: o.namespace().map(str::to_string),
                name: o.name().map(str::to_string),
                subresource: None,
            };
            let mut new = o.value();
            if new_f.is_empty() {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("finalizers");
                }
            } else {
                new["metadata"]["finalizers"] = json!(new_f);
            }
            acted |= wrote(
                handlers::write_update(api, &t, o.clone(), new, None, None, false).await,
                o,
            );
        }
    }
    acted
}

/// Whether an update really wrote (an unchanged object comes back as is), so
/// the GC loop repeats only while it makes progress.
fn wrote(
    r: super::errors::ApiResult<(hyper::StatusCode, Arc<super::cache::Obj>)>,
    before: &super::cache::Obj,
) -> bool {
    matches!(r, Ok((_, o)) if o.mod_revision != before.mod_revision)
}

/// The namespace part of a namespaced store key
/// (`/registry/<group>/<resource>/<namespace>/<name>`).
fn key_namespace(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    (parts.len() == 5).then(|| parts[3])
}

/// Records what one event means for the housekeeping pass: deletions (and
/// objects being deleted) are GC/namespace work; its namespace's quotas may
/// need new usage figures.
fn note(
    ev: &super::cache::CacheEvent,
    work: &mut bool,
    touched: &mut Option<std::collections::HashSet<String>>,
) {
    *work |= ev.obj.is_none() || ev.obj.as_ref().is_some_and(|o| o.meta.deleting);
    if let (Some(t), Some(ns)) = (touched.as_mut(), key_namespace(&ev.key)) {
        t.insert(ns.to_string());
    }
}
