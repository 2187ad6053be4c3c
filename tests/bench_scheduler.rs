//! Scheduler throughput benchmark (not part of the test suite). Run:
//!   cargo test --release --test bench_scheduler -- --ignored --nocapture
//! Starts `skiff server --simulate-nodes 1000`, creates 10,000 small pods
//! through the kube client (many requests in flight) and measures the time
//! from the first create until every pod has spec.nodeName; prints pods/s
//! and the server's RSS then and once every pod runs (steady state).

mod common;

use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};

const IN_FLIGHT: usize = 128;

/// 1,000 nodes and 10,000 pods unless SKIFF_BENCH_NODES / SKIFF_BENCH_PODS
/// say otherwise (quick runs while developing).
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.0",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .unwrap()
}

/// Pods still without a node: a LIST with a field selector, one item is
/// enough to know.
async fn any_unbound(pods: &Api<Pod>) -> bool {
    let lp = ListParams::default().fields("spec.nodeName=").limit(1);
    match pods.list(&lp).await {
        Ok(l) => !l.items.is_empty(),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scheduler_throughput() {
    let n_nodes = knob("SKIFF_BENCH_NODES", 1000);
    let n_pods = knob("SKIFF_BENCH_PODS", 10_000);
    // Extra server flags for comparisons, e.g.
    // SKIFF_BENCH_SERVER_ARGS=--disable-controller-manager (memory breakdown).
    let extra = std::env::var("SKIFF_BENCH_SERVER_ARGS").unwrap_or_default();
    let n = n_nodes.to_string();
    let mut args = vec!["--simulate-nodes", n.as_str()];
    args.extend(extra.split_whitespace());
    let s = Server::start_with(&args);
    let client = s.client().await;
    println!("server pid {}", s.pid());

    // Node registration is set-up, not part of the measurement.
    let reg = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let n = nodes
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if n >= n_nodes {
            break;
        }
        assert!(
            reg.elapsed() < Duration::from_secs(300),
            "only {n} of {n_nodes} simulated nodes registered\n{}",
            s.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{n_nodes} simulated nodes registered in {:.1} s",
        reg.elapsed().as_secs_f64()
    );
    // Let the scheduler's node watch catch up with the last registrations.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    let creator = {
        let pods = pods.clone();
        tokio::spawn(async move {
            let results: Vec<bool> = futures::stream::iter(0..n_pods)
                .map(|i| {
                    let pods = pods.clone();
                    async move {
                        for _ in 0..5 {
                            match pods.create(&PostParams::default(), &pod(i)).await {
                                Ok(_) => return true,
                                Err(kube::Error::Api(e)) if e.code == 409 => return true,
                                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        }
                        false
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            results.iter().filter(|ok| **ok).count()
        })
    };
    let created = creator.await.unwrap();
    let created_in = start.elapsed();
    assert_eq!(created, n_pods, "not every pod could be created");
    loop {
        if !any_unbound(&pods).await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "pods still unbound after 600 s\n{}",
            s.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    // Cross-check with a full list: every pod has a node.
    let all = pods.list(&ListParams::default()).await.unwrap();
    let bound = all
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    assert_eq!(bound, n_pods);
    println!(
        "{n_pods} pods created in {:.2} s ({:.0} creates/s, {IN_FLIGHT} in flight)",
        created_in.as_secs_f64(),
        n_pods as f64 / created_in.as_secs_f64()
    );
    println!(
        "{n_pods} pods scheduled onto {n_nodes} nodes in {:.2} s from the first create: {:.0} pods/s",
        took.as_secs_f64(),
        n_pods as f64 / took.as_secs_f64()
    );
    println!(
        "server RSS when the last pod was bound: {} MiB",
        s.rss_kib() / 1024
    );
    // Steady state: every pod reported Running by its simulated node, then
    // a few seconds for the server to return freed heap memory.
    let lp = ListParams::default()
        .fields("status.phase!=Running")
        .limit(1);
    while pods
        .list(&lp)
        .await
        .map(|l| !l.items.is_empty())
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "pods not running after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "all {n_pods} pods Running after {:.2} s",
        start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "server RSS with {n_pods} pods Running on {n_nodes} nodes, 10 s later: {} MiB",
        s.rss_kib() / 1024
    );
    // With SKIFF_LOG=skiff::scheduler=debug the scheduler logs where its
    // loop spent the time.
    for line in s
        .log_tail(5000)
        .lines()
        .filter(|l| l.contains("scheduler loop"))
    {
        println!("{line}");
    }
}
