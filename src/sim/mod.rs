//! Simulated nodes (the kubemark idea): `--simulate-nodes N` registers N
//! Nodes that renew their Leases and report the pods bound to them as
//! Running and Ready, without running containers, so the real scheduler and
//! controllers can be exercised at scale. Test knobs, as pod annotations:
//! `sim.skiff.io/complete-after: "<seconds>"` ends the pod after that long
//! with `sim.skiff.io/exit-code` (default 0); `sim.skiff.io/not-ready: "true"`
//! keeps it unready. A node annotated `sim.skiff.io/stopped: "true"` stops
//! renewing its Lease (a lost node).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub const PREFIX: &str = "sim-node-";

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub async fn run(client: Client, count: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..count {
        let name = format!("{PREFIX}{i}");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "simulated", "topology.kubernetes.io/zone": format!("zone-{}", i % 3)},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": format!("10.42.{}.0/24", i % 256), "podCIDRs": [format!("10.42.{}.0/24", i % 256)]},
            "status": {
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "addresses": [{"type": "InternalIP", "address": format!("198.18.{}.{}", i / 250, i % 250 + 1)}, {"type": "Hostname", "address": name}],
                "conditions": conditions(),
                "nodeInfo": {"kubeletVersion": "v1.33.1-skiff-sim", "kubeProxyVersion": "", "containerRuntimeVersion": "skiff-sim://0",
                    "operatingSystem": "linux", "architecture": "amd64", "osImage": "simulated", "kernelVersion": "simulated",
                    "machineID": "", "systemUUID": "", "bootID": ""},
            },
        }))
        .expect("node object");
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!("simulated node {name}: {e}"),
        }
        // The status is owned by the kubelet: write it through /status.
        let _ = nodes
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": node.status})),
            )
            .await;
    }
    tracing::info!(count, "simulated nodes registered");
    tokio::spawn(renew_leases(client.clone(), count));
    run_pods(client).await;
}

fn conditions() -> Value {
    let now = now_rfc3339();
    json!([
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node is ready", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": now, "lastTransitionTime": now},
    ])
}

async fn renew_leases(client: Client, count: usize) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    loop {
        for i in 0..count {
            let name = format!("{PREFIX}{i}");
            let node = nodes.get_opt(&name).await.ok().flatten();
            let stopped = node
                .as_ref()
                .and_then(|n| n.metadata.annotations.as_ref())
                .is_some_and(|a| a.get("sim.skiff.io/stopped").map(String::as_str) == Some("true"));
            if stopped {
                continue;
            }
            // Like a kubelet that is back, post Ready again when the node
            // controller marked the node Unknown meanwhile.
            let ready = node
                .as_ref()
                .and_then(|n| n.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if node.is_some() && !ready {
                let _ = nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Strategic(json!({"status": {"conditions": conditions()}})),
                    )
                    .await;
            }
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
            let _ = leases
                .patch(
                    &name,
                    &PatchParams::apply("skiff-sim").force(),
                    &Patch::Apply(lease),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn run_pods(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let started: Arc<Mutex<HashSet<String>>> = Default::default();
    let stream = watcher(pods.clone(), watcher::Config::default()).applied_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if !node.starts_with(PREFIX) {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            started.lock().await.remove(&format!("{ns}/{name}"));
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase != "Pending" {
            continue;
        }
        let uid_key = format!(
            "{ns}/{name}/{}",
            pod.metadata.uid.clone().unwrap_or_default()
        );
        if !started.lock().await.insert(uid_key) {
            continue;
        }
        tokio::spawn(start_pod(api, pod));
    }
}

async fn start_pod(api: Api<Pod>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let ready = ann.get("sim.skiff.io/not-ready").map(String::as_str) != Some("true");
    let now = now_rfc3339();
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let images: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let ip = fake_ip(pod.metadata.uid.as_deref().unwrap_or(&name));
    let statuses: Vec<Value> = containers
        .iter()
        .zip(&images)
        .map(|(c, img)| json!({"name": c, "image": img, "imageID": format!("sim://{img}"), "containerID": format!("skiff-sim://{name}-{c}"),
            "ready": ready, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}))
        .collect();
    let flag = if ready { "True" } else { "False" };
    let status = json!({"status": {
        "phase": "Running", "hostIP": "198.18.0.1", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": statuses,
    }});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
    {
        tracing::debug!("simulated pod {name}: {e}");
        return;
    }
    if let Some(secs) = ann
        .get("sim.skiff.io/complete-after")
        .and_then(|s| s.parse::<f64>().ok())
    {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let code: i32 = ann
            .get("sim.skiff.io/exit-code")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let end = now_rfc3339();
        let (phase, reason) = if code == 0 {
            ("Succeeded", "Completed")
        } else {
            ("Failed", "Error")
        };
        let statuses: Vec<Value> = containers
            .iter()
            .zip(&images)
            .map(|(c, img)| json!({"name": c, "image": img, "imageID": format!("sim://{img}"), "containerID": format!("skiff-sim://{name}-{c}"),
                "ready": false, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": end}}}))
            .collect();
        let status = json!({"status": {"phase": phase,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": end},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": end},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": statuses}});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await;
    }
}

fn fake_ip(seed: &str) -> String {
    let h = seed
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("10.42.{}.{}", (h >> 8) % 256, h % 253 + 2)
}
