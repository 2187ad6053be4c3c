//! Benchmarks (not part of the test suite). Run:
//!   cargo test --release --test bench -- --ignored --nocapture
//! Prints what it measured on this machine, in this run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

async fn client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.0",
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn api_server_benchmarks() {
    // Cold start: process spawn to /readyz 200, five times.
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s = Server::start();
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(s);
    }
    starts.sort_by(f64::total_cmp);
    println!(
        "cold start to /readyz 200: median {:.1} ms (min {:.1}, max {:.1}; includes process spawn, PKI generation and readiness polling every 5 ms)",
        pct(&starts, 0.5),
        starts[0],
        starts[starts.len() - 1]
    );

    let s = Server::start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("RSS idle: {:.1} MiB", rss_kib(s.pid()) as f64 / 1024.0);
    let c = client(&s).await;

    // Durable creates, 8 concurrent clients.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let per = 1000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("cm-{w}-{i}")}, "data": {"k": "v"}}))
                .unwrap();
                cms.create(&PostParams::default(), &cm).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "durable creates (ConfigMaps, 8 clients, {} total): {:.0} creates/s",
        8 * per,
        (8 * per) as f64 / el
    );

    // LIST of 5,000 pods.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                pods.create(&PostParams::default(), &pod(&format!("p-{w}-{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let l = pods.list(&ListParams::default()).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(l.items.len(), 5000);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "LIST 5,000 pods (kube client, incl. JSON decode into typed Pods): p50 {:.1} ms, p99 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let mut raw = Vec::new();
    for _ in 0..20 {
        let req = http::Request::get("/api/v1/namespaces/default/pods")
            .body(Vec::new())
            .unwrap();
        let t = Instant::now();
        let body = c.request_text(req).await.unwrap();
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(body.len() > 1_000_000);
    }
    raw.sort_by(f64::total_cmp);
    println!(
        "LIST 5,000 pods (server time + transfer, body not decoded): p50 {:.1} ms, p99 {:.1} ms",
        pct(&raw, 0.5),
        pct(&raw, 0.99)
    );
    println!(
        "RSS with 8,000 ConfigMaps + 5,000 pods: {:.1} MiB",
        rss_kib(s.pid()) as f64 / 1024.0
    );

    // Watch delivery latency: 100 watchers, 200 writes.
    let ns_api: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-public");
    let rv = ns_api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let mut watchers = Vec::new();
    let writes = 200;
    for _ in 0..100 {
        let api = ns_api.clone();
        let rv = rv.clone();
        let samples = samples.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().timeout(60), &rv)
                .await
                .unwrap()
                .boxed();
            let mut got = 0;
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Added(cm)) = ev {
                    let sent: u128 = cm.data.unwrap()["sent"].parse().unwrap();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros();
                    samples.lock().unwrap().push((now - sent) as f64 / 1000.0);
                    got += 1;
                    if got == writes {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..writes {
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("w-{i}")}, "data": {"sent": sent.to_string()}}))
        .unwrap();
        ns_api.create(&PostParams::default(), &cm).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap()
            .unwrap();
    }
    let mut v = samples.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    println!(
        "watch delivery, 100 watchers x {writes} writes (write sent -> event decoded by the client, incl. the durable write): p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
        pct(&v, 0.5),
        pct(&v, 0.99),
        v.len()
    );
}
