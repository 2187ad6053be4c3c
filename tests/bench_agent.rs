//! Node agent benchmark (ignored by default). Run it with
//!
//!     cargo test --release --test bench_agent -- --ignored --nocapture
//!
//! On `skiff server` with its embedded agent (image already present):
//! - pod start latency, creation acknowledged → all containers running as
//!   seen by a watch, for 100 pods created one after another: p50/p99;
//! - 30 pods created at once: time until all run, and per-pod p50/p99;
//! - the same busybox bundle started 100 times with Debian's `runc run -d`
//!   (the baseline a containerd-based node pays per container);
//! - memory: server RSS with the agent vs a control-plane-only server
//!   (`--disable-agent`) in the same run, plus the runtime keeper process,
//!   idle and with 30 pods.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "agent"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox:test",
            "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}
    }))
    .unwrap()
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().and_then(|s| s.running.as_ref()).is_some())
        })
}

/// A `Name:  N kB` line of a /proc file, in KiB.
fn proc_kib(path: &str, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size: shared pages (the keeper is the same binary as
/// the server) count once across the processes that share them.
fn pss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn keeper_pid(dir: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("agent/rt/keeper.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// Deletes every pod at once (grace 0) and waits until they are gone.
async fn delete_all(api: &Api<Pod>) {
    api.delete_collection(
        &DeleteParams::default().grace_period(0),
        &Default::default(),
    )
    .await
    .unwrap();
    wait_all_gone(api).await;
}

async fn wait_all_gone(api: &Api<Pod>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = api.list(&Default::default()).await.unwrap();
        if l.items.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "pods did not go away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --release"]
async fn bench_pod_start_latency_and_memory() {
    let s = Server::start_agent(&[]);
    let baseline = Server::start_with(&[]);
    let client = s.client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    {
        let seen = seen.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(p)) = stream.next().await {
                if running(&p) {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_server = rss_kib(s.pid());
    let idle_keeper = keeper_pid(s.dir.path()).map(rss_kib).unwrap_or(0);
    let idle_control_plane = rss_kib(baseline.pid());
    let idle_pss = pss_kib(s.pid()) + keeper_pid(s.dir.path()).map(pss_kib).unwrap_or(0);
    let idle_control_plane_pss = pss_kib(baseline.pid());

    // Warm-up: first pod (image store index, caches).
    api.create(&PostParams::default(), &pod("warm"))
        .await
        .unwrap();
    while !seen.lock().unwrap().contains_key("warm") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let wait_for = |name: String| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(t) = seen.lock().unwrap().get(&name) {
                    return *t;
                }
                assert!(Instant::now() < deadline, "{name} did not start");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let mut lat = Vec::new();
    for i in 0..100 {
        let name = format!("seq-{i}");
        let t0 = Instant::now();
        api.create(&PostParams::default(), &pod(&name))
            .await
            .unwrap();
        let t = wait_for(name).await;
        lat.push((t - t0).as_secs_f64() * 1000.0);
    }
    // Whether the latency grows with the number of pods already running.
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&lat[..20]), mean(&lat[80..]));
    let (p50, p99) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));
    println!("pod start latency, 100 pods one after another: p50 {p50:.1} ms, p99 {p99:.1} ms");
    println!("  mean of pods 1-20: {first:.1} ms, of pods 81-100: {last:.1} ms");
    delete_all(&api).await;

    // 30 at once.
    let t0 = Instant::now();
    let names: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    let creates = names.iter().map(|n| {
        let api = api.clone();
        let p = pod(n);
        async move { api.create(&PostParams::default(), &p).await.unwrap() }
    });
    futures::future::join_all(creates).await;
    let mut burst = Vec::new();
    for n in &names {
        burst.push((wait_for(n.clone()).await - t0).as_secs_f64() * 1000.0);
    }
    let all = burst.iter().cloned().fold(0.0, f64::max);
    let (b50, b99) = (pct(&mut burst.clone(), 0.5), pct(&mut burst, 0.99));
    println!(
        "30 pods at once: all running after {all:.1} ms; per pod p50 {b50:.1} ms, p99 {b99:.1} ms"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy_server = rss_kib(s.pid());
    let busy_keeper = keeper_pid(s.dir.path()).map(rss_kib).unwrap_or(0);
    let busy_control_plane = rss_kib(baseline.pid());
    let busy_pss = pss_kib(s.pid()) + keeper_pid(s.dir.path()).map(pss_kib).unwrap_or(0);
    let busy_control_plane_pss = pss_kib(baseline.pid());
    println!(
        "PSS (shared pages split): server+agent+keeper idle {:.1} MiB vs control plane {:.1} MiB -> {:.1} MiB; with 30 pods {:.1} vs {:.1} -> {:.1} MiB",
        idle_pss as f64 / 1024.0,
        idle_control_plane_pss as f64 / 1024.0,
        idle_pss.saturating_sub(idle_control_plane_pss) as f64 / 1024.0,
        busy_pss as f64 / 1024.0,
        busy_control_plane_pss as f64 / 1024.0,
        busy_pss.saturating_sub(busy_control_plane_pss) as f64 / 1024.0
    );
    println!(
        "memory idle: server+agent {:.1} MiB, keeper {:.1} MiB, control plane alone {:.1} MiB -> agent overhead {:.1} MiB",
        idle_server as f64 / 1024.0,
        idle_keeper as f64 / 1024.0,
        idle_control_plane as f64 / 1024.0,
        (idle_server + idle_keeper).saturating_sub(idle_control_plane) as f64 / 1024.0
    );
    println!(
        "memory with 30 pods: server+agent {:.1} MiB, keeper {:.1} MiB, control plane alone (no pods) {:.1} MiB -> agent overhead {:.1} MiB",
        busy_server as f64 / 1024.0,
        busy_keeper as f64 / 1024.0,
        busy_control_plane as f64 / 1024.0,
        (busy_server + busy_keeper).saturating_sub(busy_control_plane) as f64 / 1024.0
    );
    delete_all(&api).await;

    // Baseline: runc run -d of the same image's files, 100 times.
    let bundle = tempfile::Builder::new()
        .prefix("skiff-runc-")
        .tempdir()
        .unwrap();
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep")).unwrap();
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(bundle.path())
        .status()
        .expect("runc (apt-get install runc)");
    assert!(st.success());
    let cfg_path = bundle.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(["/bin/sleep", "3600"]);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut runc = Vec::new();
    for i in 0..100 {
        let id = format!("skiff-bench-{}-{i}", std::process::id());
        let t0 = Instant::now();
        let st = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(bundle.path())
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        runc.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(st.success(), "runc run failed");
        let _ = Command::new("runc").args(["delete", "-f", &id]).status();
    }
    let (r50, r99) = (pct(&mut runc.clone(), 0.5), pct(&mut runc, 0.99));
    println!(
        "runc run -d (same busybox, no pod network, no API): p50 {r50:.1} ms, p99 {r99:.1} ms"
    );
    println!("ratio skiff pod p50 / runc p50: {:.2}", p50 / r50);
}

/// Issue 4's real-node figure: a 100-replica Deployment from creation until
/// `availableReplicas == 100`, then a rolling update (25%/25%) until complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --release"]
async fn bench_100_replica_deployment_on_a_real_node() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let s = Server::start_agent(&[]);
    let client = s.client().await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
        "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "busybox:test",
                    "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}}}
    }))
    .unwrap();
    let wait = |gen_image: &'static str, t0: Instant| {
        let api = api.clone();
        async move {
            let deadline = t0 + Duration::from_secs(300);
            loop {
                let d = api.get("bench").await.unwrap();
                let (spec, st) = (
                    d.spec.clone().unwrap(),
                    d.status.clone().unwrap_or_default(),
                );
                let image = spec.template.spec.as_ref().unwrap().containers[0]
                    .command
                    .clone()
                    .unwrap_or_default()
                    .join(" ");
                if image.contains(gen_image)
                    && d.metadata.generation <= st.observed_generation
                    && st.updated_replicas == Some(100)
                    && st.replicas == Some(100)
                    && st.available_replicas == Some(100)
                {
                    return t0.elapsed().as_secs_f64();
                }
                assert!(Instant::now() < deadline, "not available: {st:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let t0 = Instant::now();
    api.create(&PostParams::default(), &d).await.unwrap();
    let up = wait("3600", t0).await;
    println!("100-replica Deployment on one real node: all available after {up:.2} s");
    let t1 = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "command": ["sleep", "7200"]}]}}}});
    api.patch("bench", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let roll = wait("7200", t1).await;
    println!("rolling update of it (25% surge / 25% unavailable): complete after {roll:.2} s");
    api.delete("bench", &DeleteParams::default()).await.unwrap();
}

/// (RSS, anonymous, file-backed) resident memory of a process, KiB.
fn mem_kib(pid: u32) -> (u64, u64, u64) {
    let status = format!("/proc/{pid}/status");
    (
        rss_kib(pid),
        proc_kib(&status, "RssAnon:"),
        proc_kib(&status, "RssFile:"),
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What a node that only runs `skiff agent` (joined to a control plane
/// elsewhere) spends: the agent process plus the runtime keeper, idle and
/// with 30 pods, split into anonymous memory and mapped binary pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --release"]
async fn bench_standalone_agent_memory() {
    let _lock = common::agent_test_lock();
    let s = Server::start_with(&[]);
    let token = common::join_token(&s);
    let url = s.url();
    // The agent runs from its own copy of the binary, as on a machine of
    // its own: no page of it is shared with the server's process.
    let bin_dir = tempfile::Builder::new()
        .prefix("skiff-bench-bin-")
        .tempdir()
        .unwrap();
    let bin = bin_dir.path().join("skiff");
    std::fs::copy(env!("CARGO_BIN_EXE_skiff"), &bin).unwrap();
    let mut agent = common::Agent::spawn_binary(
        Some(&bin),
        "bench-node",
        &["--server", &url, "--token", &token],
        &[],
    );
    tokio::task::block_in_place(|| agent.wait_ready(&s));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = |what: &str| {
        let (rss, anon, file) = mem_kib(agent.pid());
        let keeper = keeper_pid(agent.dir.path());
        let (k_rss, k_anon, k_file) = keeper.map(mem_kib).unwrap_or((0, 0, 0));
        // The two processes share the binary's pages: PSS counts them once.
        let pss = pss_kib(agent.pid()) + keeper.map(pss_kib).unwrap_or(0);
        println!(
            "standalone agent {what}: agent RSS {:.1} MiB (anon {:.1}, binary/file {:.1}), keeper RSS {:.1} MiB (anon {:.1}, file {:.1}); agent+keeper PSS {:.1} MiB, anon {:.1} MiB",
            mib(rss),
            mib(anon),
            mib(file),
            mib(k_rss),
            mib(k_anon),
            mib(k_file),
            mib(pss),
            mib(anon + k_anon),
        );
    };
    report("idle");

    let client = s.client().await;
    let api: Api<Pod> = Api::namespaced(client, "default");
    for i in 0..30 {
        api.create(&PostParams::default(), &pod(&format!("mem-{i}")))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = api.list(&Default::default()).await.unwrap();
        if l.items.iter().filter(|p| running(p)).count() == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "30 pods did not all run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    report("with 30 pods");
    delete_all(&api).await;
}
