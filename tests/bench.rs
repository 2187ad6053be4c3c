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
    // Cold start: process spawn to the first /readyz 200, polling every
    // millisecond; first start (PKI generated) and restart (PKI reused).
    let mut first = Vec::new();
    let mut again = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let kc = dir.path().join("kc.yaml");
            let _ = std::fs::remove_file(&kc);
            let t = Instant::now();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
                .args([
                    "server",
                    "--data-dir",
                    dir.path().to_str().unwrap(),
                    "--https-listen-port",
                    &port.to_string(),
                    "--bind-address",
                    "127.0.0.1",
                    "--write-kubeconfig",
                    kc.to_str().unwrap(),
                    "--config",
                    "/nonexistent",
                    "--disable-agent",
                ])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            loop {
                if kc.exists() && common::readyz(port, &kc).is_ok() {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(1));
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if round == 0 {
                first.push(ms)
            } else {
                again.push(ms)
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    first.sort_by(f64::total_cmp);
    again.sort_by(f64::total_cmp);
    println!(
        "cold start to /readyz 200 (process spawn to first 200, 1 ms polling): first start {:.1} ms median (max {:.1}); restart {:.1} ms median (max {:.1})",
        pct(&first, 0.5),
        first[first.len() - 1],
        pct(&again, 0.5),
        again[again.len() - 1]
    );

    let s = Server::start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("RSS idle: {:.1} MiB", s.rss_kib() as f64 / 1024.0);
    let c = s.client().await;

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
        s.rss_kib() as f64 / 1024.0
    );

    // CRD: create to first successful custom-object create.
    let crd_api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(c.clone());
    let crd = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gadgets.bench.example"},
        "spec": {"group": "bench.example", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).unwrap();
    let t = Instant::now();
    crd_api.create(&PostParams::default(), &crd).await.unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("bench.example", "v1", "Gadget");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "gadgets");
    let gadgets: Api<kube::api::DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "bench.example/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {}})).unwrap();
    let mut tries = 0;
    while gadgets.create(&PostParams::default(), &obj).await.is_err() {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "CRD created -> first custom object accepted: {:.1} ms ({tries} retries)",
        t.elapsed().as_secs_f64() * 1000.0
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

/// The same durable-write workload against etcd (the peer: kube-apiserver's
/// datastore), when Debian's etcd-server is installed: 8 concurrent clients
/// doing PUTs through etcd's JSON gateway over HTTP/1.1 keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn etcd_peer_benchmark() {
    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    let Ok(etcd) = which("etcd") else {
        println!("etcd not installed (apt-get install etcd-server); peer comparison skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(etcd)
        .args([
            "--data-dir",
            dir.path().join("etcd").to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "etcd did not start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = 1000;
    let value = base64::engine::general_purpose::STANDARD.encode(
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","namespace":"default","uid":"0b0f3f4e-1d2c-4c55-9d1e-3b1e6b1f8a11","creationTimestamp":"2026-01-01T00:00:00Z"},"data":{"k":"v"}}"#,
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let addr = addr.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for i in 0..per {
                let key = base64::engine::general_purpose::STANDARD
                    .encode(format!("/registry/configmaps/default/cm-{w}-{i}"));
                let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
                let req = hyper::Request::post("/v3/kv/put")
                    .header("host", &addr)
                    .header("content-type", "application/json")
                    .body(Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                assert!(resp.status().is_success());
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "etcd {} (peer): durable puts, 8 clients, {} total: {:.0} puts/s",
        etcd_version(),
        8 * per,
        (8 * per) as f64 / el
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn which(bin: &str) -> Result<String, ()> {
    for d in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = format!("{d}/{bin}");
        if std::path::Path::new(&p).exists() {
            return Ok(p);
        }
    }
    Err(())
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default()
}
