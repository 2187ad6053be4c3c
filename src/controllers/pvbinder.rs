//! PersistentVolume binder (upstream's `persistentvolume-binder`, static
//! provisioning only): a Pending claim is bound to the smallest Available
//! volume with the same storage class, covering access modes and enough
//! capacity (or to the volume it names in `spec.volumeName`); the volume
//! gets a `claimRef`, both get phase `Bound`. A volume whose claim is
//! deleted becomes `Released` (reclaim policy Retain) or is deleted
//! (Delete). Dynamic provisioning is not done: claims with no match stay
//! Pending with a `FailedBinding` event, as upstream without a provisioner.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const PERIOD: Duration = Duration::from_secs(2);

fn storage(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| crate::quantity::quantity_scaled(&q.0, 0))
        .unwrap_or(0)
}

fn class_of_claim(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn class_of_volume(v: &PersistentVolume) -> String {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn phase_of(v: &PersistentVolume) -> String {
    v.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Available".into())
}

/// Does `v` satisfy `c` (class, access modes, size)?
fn fits(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (v.spec.as_ref(), c.spec.as_ref()) else {
        return false;
    };
    let want = storage(
        cs.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    let have = storage(vs.capacity.as_ref().and_then(|c| c.get("storage")));
    let modes = vs.access_modes.clone().unwrap_or_default();
    class_of_volume(v) == class_of_claim(c)
        && have >= want
        && cs
            .access_modes
            .clone()
            .unwrap_or_default()
            .iter()
            .all(|m| modes.contains(m))
        && cs.volume_mode.as_deref().unwrap_or("Filesystem")
            == vs.volume_mode.as_deref().unwrap_or("Filesystem")
}

pub async fn run(client: Client) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "persistentvolume-controller".into(),
            instance: None,
        },
    );
    let mut reported = std::collections::HashSet::new();
    loop {
        if let Err(e) = sync(&client, &recorder, &mut reported).await {
            tracing::debug!("pv binder: {e}");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

async fn sync(
    client: &Client,
    recorder: &Recorder,
    reported: &mut std::collections::HashSet<String>,
) -> Result<(), kube::Error> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let all_claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let mut volumes = pvs.list(&ListParams::default()).await?.items;
    let claims = all_claims.list(&ListParams::default()).await?.items;
    // New volumes become Available (the API server creates them Pending or phase-less).
    for v in &mut volumes {
        let phase = v
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let claimed = v.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
        if (phase.is_empty() || phase == "Pending") && !claimed {
            pvs.patch_status(
                &v.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Available"}})),
            )
            .await?;
            v.status.get_or_insert_with(Default::default).phase = Some("Available".into());
        }
    }
    // Volumes whose claim is gone.
    for v in &volumes {
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            continue;
        };
        let exists = claims.iter().any(|c| {
            c.namespace() == r.namespace
                && Some(c.name_any()) == r.name
                && (r.uid.is_none() || c.uid() == r.uid)
        });
        if !exists && phase_of(v) == "Bound" {
            let policy = v
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                .unwrap_or_else(|| "Retain".into());
            if policy == "Delete" {
                let _ = pvs.delete(&v.name_any(), &DeleteParams::default()).await;
            } else {
                let _ = pvs
                    .patch_status(
                        &v.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"phase": "Released"}})),
                    )
                    .await;
            }
        }
    }
    for c in &claims {
        let phase = c
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Bound" || c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = c.namespace().unwrap_or_default();
        let name = c.name_any();
        let named = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty());
        let chosen = match &named {
            Some(vn) => volumes.iter().find(|v| &v.name_any() == vn).cloned(),
            None => {
                let mut candidates: Vec<&PersistentVolume> = volumes
                    .iter()
                    .filter(|v| {
                        phase_of(v) == "Available"
                            && v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                            && fits(v, c)
                    })
                    .collect();
                candidates.sort_by_key(|v| {
                    storage(
                        v.spec
                            .as_ref()
                            .and_then(|s| s.capacity.as_ref())
                            .and_then(|c| c.get("storage")),
                    )
                });
                candidates.first().map(|v| (*v).clone())
            }
        };
        let Some(v) = chosen else {
            // One event per claim, not one per pass.
            if !reported.insert(c.uid().unwrap_or_default()) {
                continue;
            }
            let ev = Event {
                type_: EventType::Normal,
                reason: "FailedBinding".into(),
                note: Some(
                    "no persistent volumes available for this claim and no storage class is set"
                        .into(),
                ),
                action: "Binding".into(),
                secondary: None,
            };
            let _ = recorder.publish(&ev, &c.object_ref(&())).await;
            continue;
        };
        // A volume reserved for another claim is not taken.
        if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
            && (r.name.as_deref() != Some(name.as_str())
                || r.namespace.as_deref() != Some(ns.as_str()))
        {
            continue;
        }
        let claim_ref = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": c.uid(), "resourceVersion": c.resource_version()});
        pvs.patch(
            &v.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"claimRef": claim_ref}})),
        )
        .await?;
        pvs.patch_status(
            &v.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await?;
        let claims_ns: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let capacity = v.spec.as_ref().and_then(|s| s.capacity.clone());
        let modes = v.spec.as_ref().and_then(|s| s.access_modes.clone());
        claims_ns
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": if named.is_some() { "no" } else { "yes" }}},
                    "spec": {"volumeName": v.name_any()}})),
            )
            .await?;
        claims_ns
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": capacity, "accessModes": modes}})),
            )
            .await?;
        // Keep our snapshot current so one volume is not given twice.
        if let Some(slot) = volumes.iter_mut().find(|x| x.name_any() == v.name_any()) {
            if let Some(s) = slot.spec.as_mut() {
                s.claim_ref = serde_json::from_value(claim_ref).ok();
            }
            slot.status.get_or_insert_with(Default::default).phase = Some("Bound".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(class: &str, size: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(
            json!({"metadata": {"name": "v"}, "spec": {"storageClassName": class,
            "capacity": {"storage": size}, "accessModes": modes, "hostPath": {"path": "/tmp/x"}}}),
        )
        .unwrap()
    }

    fn pvc(class: &str, size: &str, modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"storageClassName": class,
            "resources": {"requests": {"storage": size}}, "accessModes": modes}}),
        )
        .unwrap()
    }

    #[test]
    fn matching_rules() {
        assert!(fits(
            &pv("manual", "1Gi", &["ReadWriteOnce"]),
            &pvc("manual", "500Mi", &["ReadWriteOnce"])
        ));
        assert!(!fits(
            &pv("manual", "100Mi", &["ReadWriteOnce"]),
            &pvc("manual", "500Mi", &["ReadWriteOnce"])
        ));
        assert!(!fits(
            &pv("fast", "1Gi", &["ReadWriteOnce"]),
            &pvc("manual", "1Gi", &["ReadWriteOnce"])
        ));
        assert!(!fits(
            &pv("manual", "1Gi", &["ReadWriteOnce"]),
            &pvc("manual", "1Gi", &["ReadWriteMany"])
        ));
    }
}
