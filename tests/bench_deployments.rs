//! Deployment benchmark (ignored by default). Run it with
//!
//!     cargo test --release --test bench_deployments -- --ignored --nocapture
//!
//! A 100-replica Deployment from creation until all 100 pods are available,
//! then a rolling update of it (default 25% surge / 25% unavailable) until
//! the rollout is complete, on simulated nodes (`--simulate-nodes 2`). The
//! target is "on one real node", but skiff has no node agent yet: simulated
//! nodes report bound pods Running and Ready without starting containers, so
//! these figures cover the control plane (API server, store, scheduler,
//! ReplicaSet and Deployment controllers) and not container start-up.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const REPLICAS: i32 = 100;

/// Rollout complete as `kubectl rollout status` judges it, on `image`.
fn complete(d: &Deployment, image: &str) -> bool {
    let (Some(spec), Some(st)) = (&d.spec, &d.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    spec.template
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.as_deref())
        == Some(image)
        && d.metadata.generation <= st.observed_generation
        && st.updated_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
}

async fn wait_complete(api: &Api<Deployment>, image: &str, started: Instant) -> f64 {
    let deadline = started + Duration::from_secs(300);
    loop {
        let d = api.get("bench").await.expect("get deployment");
        if complete(&d, image) {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not complete: {:?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --release"]
async fn bench_100_replica_deployment() {
    let s = Server::start_with(&["--simulate-nodes", "2"]);
    let c = s.client().await;
    let api: Api<Deployment> = Api::namespaced(c, "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.0"}]}
            }
        }
    }))
    .unwrap();

    let started = Instant::now();
    api.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let create_secs = wait_complete(&api, "nginx:1.0", started).await;

    let started = Instant::now();
    api.patch(
        "bench",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "nginx:2.0"}]}}}})),
    )
    .await
    .expect("patch image");
    let update_secs = wait_complete(&api, "nginx:2.0", started).await;

    println!(
        "skiff deployment benchmark ({REPLICAS} replicas, simulated nodes: no node agent exists yet, \
         so this is the control plane without container start-up)"
    );
    println!("  create -> {REPLICAS}/{REPLICAS} available: {create_secs:.2} s");
    println!("  rolling update (25% surge, 25% unavailable) -> complete: {update_secs:.2} s");
}
