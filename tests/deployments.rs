//! Deployments, ReplicaSets and ReplicationControllers end to end: real
//! `skiff server` processes with simulated nodes (`--simulate-nodes 2`),
//! driven by the real kubectl (`rollout status|history|undo|pause|resume|
//! restart`, `scale`, `set image`) and observed through watches.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::config::Kubeconfig;
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

const SIM: &[&str] = &["--simulate-nodes", "2"];

/// Binds pods that stay unscheduled, to sim-node-0 through `pods/binding`,
/// so these tests do not depend on the scheduler; it leaves alone pods that
/// are bound already and gives the real scheduler a head start. Survives
/// server restarts by rebuilding its client.
fn start_fallback_binder(s: &Server) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let kubeconfig = s.kubeconfig.clone();
    tokio::spawn(async move {
        let mut first_seen: HashMap<String, Instant> = HashMap::new();
        while !stop2.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(kc) = Kubeconfig::read_from(&kubeconfig) else {
                continue;
            };
            let Ok(mut cfg) = Config::from_custom_kubeconfig(kc, &Default::default()).await else {
                continue;
            };
            cfg.proxy_url = None;
            let Ok(c) = Client::try_from(cfg) else {
                continue;
            };
            let all: Api<Pod> = Api::all(c.clone());
            let Ok(list) = all.list(&ListParams::default()).await else {
                continue;
            };
            for p in list.items {
                let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                if bound || p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                let seen = *first_seen.entry(key).or_insert_with(Instant::now);
                if seen.elapsed() < Duration::from_secs(2) {
                    continue;
                }
                let api: Api<Pod> = Api::namespaced(c.clone(), &p.namespace().unwrap_or_default());
                let body = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": p.name_any()},
                    "target": {"kind": "Node", "name": "sim-node-0"}});
                let _ = api
                    .create_subresource::<Value, Value>(
                        "binding",
                        &p.name_any(),
                        &PostParams::default(),
                        &body,
                    )
                    .await;
            }
        }
    });
    stop
}

/// Polls `f` until it returns `Some`, or panics after `secs`.
async fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).expect("kubectl JSON")
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Pods with the label selector that are not being deleted.
fn live_pods(s: &Server, selector: &str) -> Vec<Value> {
    items(&get_json(s, &["pods", "-l", selector]))
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn events(s: &Server) -> Vec<Value> {
    items(&get_json(s, &["events"]))
}

fn has_event(s: &Server, reason: &str, kind: &str, message_prefix: &str) -> bool {
    events(s).iter().any(|e| {
        e["reason"] == reason
            && e.pointer("/involvedObject/kind").and_then(Value::as_str) == Some(kind)
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message_prefix))
    })
}

fn deployment_yaml(
    name: &str,
    replicas: i32,
    image: &str,
    extra_spec: &str,
    annotations: &str,
) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
{extra_spec}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: c
        image: {image}
"
    )
}

/// Follows the pods matching `selector` through a watch and records, after
/// the initial list, the lowest number of ready (and not terminating) pods,
/// the highest number of live pods, and the largest number of distinct
/// `pod-template-hash` values present at once.
struct PodSampler {
    min_ready: Arc<AtomicI64>,
    max_live: Arc<AtomicI64>,
    max_versions: Arc<AtomicI64>,
    synced: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PodSampler {
    async fn start(c: Client, selector: &str) -> PodSampler {
        let min_ready = Arc::new(AtomicI64::new(i64::MAX));
        let max_live = Arc::new(AtomicI64::new(0));
        let max_versions = Arc::new(AtomicI64::new(0));
        let synced = Arc::new(AtomicBool::new(false));
        let (mr, ml, mv, sy) = (
            min_ready.clone(),
            max_live.clone(),
            max_versions.clone(),
            synced.clone(),
        );
        let api: Api<Pod> = Api::namespaced(c, "default");
        let cfg = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            // name -> (ready and not terminating, terminating, template hash)
            let state: Mutex<BTreeMap<String, (bool, bool, String)>> = Mutex::new(BTreeMap::new());
            let mut init: BTreeMap<String, (bool, bool, String)> = BTreeMap::new();
            let stream = watcher(api, cfg);
            futures::pin_mut!(stream);
            let view = |p: &Pod| {
                let deleting = p.metadata.deletion_timestamp.is_some();
                let ready = !deleting
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                let hash = p
                    .labels()
                    .get("pod-template-hash")
                    .cloned()
                    .unwrap_or_default();
                (ready, deleting, hash)
            };
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let mut st = state.lock().unwrap();
                match ev {
                    watcher::Event::Init => init.clear(),
                    watcher::Event::InitApply(p) => {
                        init.insert(p.name_any(), view(&p));
                    }
                    watcher::Event::InitDone => {
                        *st = std::mem::take(&mut init);
                        sy.store(true, Ordering::SeqCst);
                    }
                    watcher::Event::Apply(p) => {
                        st.insert(p.name_any(), view(&p));
                    }
                    watcher::Event::Delete(p) => {
                        st.remove(&p.name_any());
                    }
                }
                if sy.load(Ordering::SeqCst) {
                    let ready = st.values().filter(|v| v.0).count() as i64;
                    let live = st.values().filter(|v| !v.1).count() as i64;
                    let versions: BTreeSet<&String> = st.values().map(|v| &v.2).collect();
                    mr.fetch_min(ready, Ordering::SeqCst);
                    ml.fetch_max(live, Ordering::SeqCst);
                    mv.fetch_max(versions.len() as i64, Ordering::SeqCst);
                }
            }
        });
        let s = PodSampler {
            min_ready,
            max_live,
            max_versions,
            synced,
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.synced.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "pod watch did not sync");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }
}

impl Drop for PodSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn container_image(p: &Value) -> String {
    p.pointer("/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_history_undo_scale_replace_and_cascading_delete() {
    let s = Server::start_with(SIM);
    let _binder = start_fallback_binder(&s);
    let c = s.client().await;
    let strategy =
        "  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment_yaml(
            "web",
            4,
            "nginx:1.0",
            strategy,
            "kubernetes.io/change-cause: first",
        ),
    );
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);

    // The ReplicaSet: named after the template hash, selected and labelled by it.
    let rs_list = items(&get_json(&s, &["rs", "-l", "app=web"]));
    assert_eq!(rs_list.len(), 1, "{rs_list:?}");
    let rs = &rs_list[0];
    let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs_name, format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"],
        hash
    );
    let ann = &rs["metadata"]["annotations"];
    assert_eq!(ann["deployment.kubernetes.io/revision"], "1");
    assert_eq!(ann["deployment.kubernetes.io/desired-replicas"], "4");
    assert_eq!(ann["deployment.kubernetes.io/max-replicas"], "5");
    assert_eq!(ann["kubernetes.io/change-cause"], "first");
    let owner = &rs["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["controller"], true);
    assert_eq!(rs["status"]["readyReplicas"], 4);
    assert_eq!(rs["status"]["availableReplicas"], 4);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 4);
    assert_eq!(
        rs["status"]["observedGeneration"],
        rs["metadata"]["generation"]
    );

    let pods = live_pods(&s, "app=web");
    assert_eq!(pods.len(), 4);
    for p in &pods {
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{rs_name}-"))
        );
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash);
        let o = &p["metadata"]["ownerReferences"][0];
        assert_eq!(o["kind"], "ReplicaSet");
        assert_eq!(o["name"], rs_name.as_str());
        assert_eq!(o["controller"], true);
        assert_eq!(o["blockOwnerDeletion"], true);
    }
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(d["status"]["replicas"], 4);
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(d["status"]["readyReplicas"], 4);
    assert_eq!(d["status"]["availableReplicas"], 4);
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Available" && c["reason"] == "MinimumReplicasAvailable")
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
    );
    let msg = format!("Scaled up replica set {rs_name} from 0 to 4");
    wait_for("ScalingReplicaSet event", 10, || {
        has_event(&s, "ScalingReplicaSet", "Deployment", &msg).then_some(())
    })
    .await;
    wait_for("SuccessfulCreate event", 10, || {
        has_event(
            &s,
            "SuccessfulCreate",
            "ReplicaSet",
            &format!("Created pod: {rs_name}-"),
        )
        .then_some(())
    })
    .await;

    // Rolling update: ready pods never below replicas - maxUnavailable.
    let sampler = PodSampler::start(c.clone(), "app=web").await;
    s.kubectl_ok(&["set", "image", "deploy/web", "c=nginx:2.0"]);
    s.kubectl_ok(&[
        "annotate",
        "deploy/web",
        "--overwrite",
        "kubernetes.io/change-cause=second",
    ]);
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let pods = live_pods(&s, "app=web");
    assert_eq!(pods.len(), 4);
    assert!(
        pods.iter().all(|p| container_image(p) == "nginx:2.0"),
        "{pods:?}"
    );
    assert!(
        sampler.min_ready.load(Ordering::SeqCst) >= 3,
        "ready pods dropped to {} during the rollout",
        sampler.min_ready.load(Ordering::SeqCst)
    );
    drop(sampler);

    let history = s.kubectl_ok(&["rollout", "history", "deploy/web"]);
    assert!(history.contains("REVISION"), "{history}");
    let revs: Vec<&str> = history
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revs.len(), 2, "{history}");
    assert!(
        revs[0].starts_with('1') && revs[0].contains("first"),
        "{history}"
    );
    assert!(
        revs[1].starts_with('2') && revs[1].contains("second"),
        "{history}"
    );
    let rev1 = s.kubectl_ok(&["rollout", "history", "deploy/web", "--revision=1"]);
    assert!(rev1.contains("nginx:1.0"), "{rev1}");

    // Undo goes back to the previous template, as revision 3.
    let sampler = PodSampler::start(c.clone(), "app=web").await;
    s.kubectl_ok(&["rollout", "undo", "deploy/web"]);
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let pods = live_pods(&s, "app=web");
    assert_eq!(pods.len(), 4);
    assert!(
        pods.iter().all(|p| container_image(p) == "nginx:1.0"),
        "{pods:?}"
    );
    assert!(sampler.min_ready.load(Ordering::SeqCst) >= 3);
    drop(sampler);
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.0"
    );
    let reused = get_json(&s, &["rs", &rs_name]);
    assert_eq!(
        reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(items(&get_json(&s, &["rs", "-l", "app=web"])).len(), 2);

    // Scale to 5, then to 1.
    s.kubectl_ok(&["scale", "deploy/web", "--replicas=5"]);
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    wait_for("5 ready pods", 30, || {
        let p = live_pods(&s, "app=web");
        (p.len() == 5 && p.iter().all(is_ready)).then_some(())
    })
    .await;
    s.kubectl_ok(&["scale", "deploy/web", "--replicas=1"]);
    wait_for("1 pod", 30, || {
        (live_pods(&s, "app=web").len() == 1).then_some(())
    })
    .await;
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(d["status"]["replicas"], 1);
    assert_eq!(d["status"]["availableReplicas"], 1);

    // A deleted pod is replaced.
    let victim = live_pods(&s, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for("a replacement pod", 30, || {
        let p = live_pods(&s, "app=web");
        (p.len() == 1 && p[0]["metadata"]["name"] != victim.as_str() && is_ready(&p[0]))
            .then_some(())
    })
    .await;

    // Cascading delete removes ReplicaSets and pods.
    s.kubectl_ok(&["delete", "deploy", "web"]);
    wait_for("ReplicaSets and pods gone", 30, || {
        (items(&get_json(&s, &["rs", "-l", "app=web"])).is_empty()
            && items(&get_json(&s, &["pods", "-l", "app=web"])).is_empty())
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_restart_and_recreate() {
    let s = Server::start_with(SIM);
    let _binder = start_fallback_binder(&s);
    let c = s.client().await;
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment_yaml("p", 2, "nginx:1.0", "", ""),
    );
    s.kubectl_ok(&["rollout", "status", "deploy/p", "--timeout=60s"]);

    // Paused: a template change makes no new ReplicaSet.
    s.kubectl_ok(&["rollout", "pause", "deploy/p"]);
    s.kubectl_ok(&["set", "image", "deploy/p", "c=nginx:2.0"]);
    wait_for("Progressing=DeploymentPaused", 20, || {
        let d = get_json(&s, &["deploy", "p"]);
        let paused = d["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
        });
        (paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(())
    })
    .await;
    // Give a (wrongly) running rollout time to show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(items(&get_json(&s, &["rs", "-l", "app=p"])).len(), 1);
    assert!(
        live_pods(&s, "app=p")
            .iter()
            .all(|p| container_image(p) == "nginx:1.0")
    );

    s.kubectl_ok(&["rollout", "resume", "deploy/p"]);
    s.kubectl_ok(&["rollout", "status", "deploy/p", "--timeout=60s"]);
    assert_eq!(items(&get_json(&s, &["rs", "-l", "app=p"])).len(), 2);
    wait_for("pods on the new image", 30, || {
        let p = live_pods(&s, "app=p");
        (p.len() == 2 && p.iter().all(|p| container_image(p) == "nginx:2.0")).then_some(())
    })
    .await;

    // Restart rolls every pod to a new ReplicaSet.
    let before: BTreeSet<String> = live_pods(&s, "app=p")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    s.kubectl_ok(&["rollout", "restart", "deploy/p"]);
    s.kubectl_ok(&["rollout", "status", "deploy/p", "--timeout=60s"]);
    assert_eq!(items(&get_json(&s, &["rs", "-l", "app=p"])).len(), 3);
    wait_for("restarted pods", 30, || {
        let p = live_pods(&s, "app=p");
        (p.len() == 2
            && p.iter().all(|p| {
                !before.contains(p["metadata"]["name"].as_str().unwrap())
                    && p.pointer("/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
                        .is_some()
            }))
        .then_some(())
    })
    .await;

    // revisionHistoryLimit: scaled-down old ReplicaSets beyond it go.
    s.kubectl_ok(&[
        "patch",
        "deploy/p",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":1}}"#,
    ]);
    wait_for("history trimmed to one old ReplicaSet", 30, || {
        (items(&get_json(&s, &["rs", "-l", "app=p"])).len() == 2).then_some(())
    })
    .await;
    let history = s.kubectl_ok(&["rollout", "history", "deploy/p"]);
    let revs: Vec<&str> = history
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(revs, ["2", "3"], "{history}");

    // Recreate: old pods are all gone before any new one exists.
    let strategy = "  strategy:\n    type: Recreate";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment_yaml("r", 3, "nginx:1.0", strategy, ""),
    );
    s.kubectl_ok(&["rollout", "status", "deploy/r", "--timeout=60s"]);
    let sampler = PodSampler::start(c.clone(), "app=r").await;
    s.kubectl_ok(&["set", "image", "deploy/r", "c=nginx:2.0"]);
    s.kubectl_ok(&["rollout", "status", "deploy/r", "--timeout=60s"]);
    wait_for("recreated pods", 30, || {
        let p = live_pods(&s, "app=r");
        (p.len() == 3
            && p.iter()
                .all(|p| container_image(p) == "nginx:2.0" && is_ready(p)))
        .then_some(())
    })
    .await;
    assert_eq!(
        sampler.max_versions.load(Ordering::SeqCst),
        1,
        "old and new pods existed at the same time under Recreate"
    );
    let d = get_json(&s, &["deploy", "r"]);
    let rs_name = items(&get_json(&s, &["rs", "-l", "app=r"]))
        .into_iter()
        .find(|rs| rs["spec"]["replicas"] == 3)
        .map(|rs| rs["metadata"]["name"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert!(has_event(
        &s,
        "ScalingReplicaSet",
        "Deployment",
        &format!("Scaled up replica set {rs_name} from 0 to 3")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_deadline_and_automatic_rollback() {
    let s = Server::start_with(SIM);
    let _binder = start_fallback_binder(&s);
    let strategy = "  progressDeadlineSeconds: 5\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment_yaml(
            "ar",
            2,
            "nginx:1.0",
            strategy,
            "skiff.io/rollback-on-failure: \"true\"",
        ),
    );
    let strategy_na = "  progressDeadlineSeconds: 3\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment_yaml("na", 1, "nginx:1.0", strategy_na, ""),
    );
    s.kubectl_ok(&["rollout", "status", "deploy/ar", "--timeout=60s"]);
    s.kubectl_ok(&["rollout", "status", "deploy/na", "--timeout=60s"]);

    // A new template whose pods never become ready.
    let unready = r#"{"spec":{"template":{"metadata":{"annotations":{"sim.skiff.io/not-ready":"true"}},"spec":{"containers":[{"name":"c","image":"nginx:2.0"}]}}}}"#;
    s.kubectl_ok(&["patch", "deploy/ar", "-p", unready]);
    s.kubectl_ok(&["patch", "deploy/na", "-p", unready]);

    // Without the annotation: ProgressDeadlineExceeded, and rollout status fails.
    let out = s.kubectl(&["rollout", "status", "deploy/na", "--timeout=60s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let d = get_json(&s, &["deploy", "na"]);
    let cond = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "ProgressDeadlineExceeded");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .ends_with("has timed out progressing."),
        "{cond}"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2.0"
    );
    // The old pod stayed (maxUnavailable 0).
    assert!(
        live_pods(&s, "app=na")
            .iter()
            .any(|p| container_image(p) == "nginx:1.0" && is_ready(p))
    );

    // With it: rolled back to the last fully available revision, with an event.
    let expected =
        "Rollout of revision 2 exceeded its progress deadline (5s); rolled back to revision 1";
    wait_for("RolledBack event", 60, || {
        events(&s)
            .iter()
            .any(|e| {
                e["reason"] == "RolledBack" && e["type"] == "Warning" && e["message"] == expected
            })
            .then_some(())
    })
    .await;
    s.kubectl_ok(&["rollout", "status", "deploy/ar", "--timeout=60s"]);
    let d = get_json(&s, &["deploy", "ar"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.0"
    );
    assert!(
        d.pointer("/spec/template/metadata/annotations/sim.skiff.io~1not-ready")
            .is_none()
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        d["metadata"]["annotations"]["skiff.io/rollback-on-failure"],
        "true"
    );
    wait_for("only good pods", 30, || {
        let p = live_pods(&s, "app=ar");
        (p.len() == 2
            && p.iter()
                .all(|p| container_image(p) == "nginx:1.0" && is_ready(p)))
        .then_some(())
    })
    .await;
    // It rolled back once, not in a loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = events(&s)
        .iter()
        .filter(|e| e["reason"] == "RolledBack")
        .count();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_duplicate_pods_after_kill_9_mid_scale_up() {
    let mut s = Server::start_with(SIM);
    let _binder = start_fallback_binder(&s);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment_yaml("k", 1, "nginx:1.0", "", ""),
    );
    s.kubectl_ok(&["rollout", "status", "deploy/k", "--timeout=60s"]);
    let c = s.client().await;
    let pods: Api<Pod> = Api::namespaced(c, "default");
    s.kubectl_ok(&["scale", "deploy/k", "--replicas=60"]);
    // Kill as soon as the scale-up is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = pods
            .list(&ListParams::default().labels("app=k"))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if n >= 4 {
            eprintln!("killing the server with {n} of 60 pods created");
            break;
        }
        assert!(Instant::now() < deadline, "scale-up did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.restart_kill9();
    let c = s.client().await;
    let sampler = PodSampler::start(c, "app=k").await;
    s.kubectl_ok(&["rollout", "status", "deploy/k", "--timeout=90s"]);
    wait_for("60 ready pods", 60, || {
        let p = live_pods(&s, "app=k");
        (p.len() == 60 && p.iter().all(is_ready)).then_some(())
    })
    .await;
    assert!(
        sampler.max_live.load(Ordering::SeqCst) <= 60,
        "{} pods existed at once",
        sampler.max_live.load(Ordering::SeqCst)
    );
    assert_eq!(items(&get_json(&s, &["pods", "-l", "app=k"])).len(), 60);
    assert_eq!(items(&get_json(&s, &["rs", "-l", "app=k"])).len(), 1);
    // Nothing surplus was ever created and then deleted.
    assert!(!events(&s).iter().any(|e| e["reason"] == "SuccessfulDelete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaset_adoption_release_ranking_min_ready_and_replication_controller() {
    let s = Server::start_with(SIM);
    let _binder = start_fallback_binder(&s);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs1}
spec:
  replicas: 3
  selector: {matchLabels: {app: rs1}}
  template:
    metadata: {labels: {app: rs1, tier: x}}
    spec: {containers: [{name: c, image: nginx}]}
",
    );
    let originals: BTreeSet<String> = wait_for("3 ready pods", 30, || {
        let p = live_pods(&s, "app=rs1");
        (p.len() == 3 && p.iter().all(is_ready)).then(|| {
            p.iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        })
    })
    .await;
    for n in &originals {
        assert!(n.starts_with("rs1-"), "{n}");
    }
    wait_for("RS status", 20, || {
        let rs = get_json(&s, &["rs", "rs1"]);
        let st = &rs["status"];
        (st["replicas"] == 3
            && st["fullyLabeledReplicas"] == 3
            && st["readyReplicas"] == 3
            && st["availableReplicas"] == 3
            && st["observedGeneration"] == rs["metadata"]["generation"])
            .then_some(())
    })
    .await;

    // An orphan that matches is adopted; the surplus pod deleted is the
    // one that is not ready.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Pod
metadata:
  name: orphan
  labels: {app: rs1}
  annotations: {sim.skiff.io/not-ready: \"true\"}
spec: {containers: [{name: c, image: nginx}]}
",
    );
    wait_for("orphan adopted and deleted", 30, || {
        let p = live_pods(&s, "app=rs1");
        let names: BTreeSet<String> = p
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        (names == originals).then_some(())
    })
    .await;
    wait_for("SuccessfulDelete event", 20, || {
        has_event(&s, "SuccessfulDelete", "ReplicaSet", "Deleted pod: orphan").then_some(())
    })
    .await;
    assert!(has_event(
        &s,
        "SuccessfulCreate",
        "ReplicaSet",
        "Created pod: rs1-"
    ));

    // A pod relabelled out of the selector is released and replaced.
    let released = originals.iter().next().unwrap().clone();
    s.kubectl_ok(&["label", "pod", &released, "app=gone", "--overwrite"]);
    wait_for("released and replaced", 30, || {
        let p = live_pods(&s, "app=rs1");
        let gone = get_json(&s, &["pod", &released]);
        (p.len() == 3
            && !p.iter().any(|p| p["metadata"]["name"] == released.as_str())
            && gone
                .pointer("/metadata/ownerReferences")
                .is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)))
        .then_some(())
    })
    .await;

    // minReadySeconds: ready pods count as available only later.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: mr}
spec:
  replicas: 2
  minReadySeconds: 3
  selector: {matchLabels: {app: mr}}
  template:
    metadata: {labels: {app: mr}}
    spec: {containers: [{name: c, image: nginx}]}
",
    );
    let first_all_ready = wait_for("mr ready", 30, || {
        let st = get_json(&s, &["rs", "mr"])["status"].clone();
        (st["readyReplicas"] == 2).then_some(st)
    })
    .await;
    assert_ne!(first_all_ready["availableReplicas"], 2, "{first_all_ready}");
    wait_for("mr available", 30, || {
        (get_json(&s, &["rs", "mr"])["status"]["availableReplicas"] == 2).then_some(())
    })
    .await;

    // ReplicationController: the same, on core/v1 with a map selector.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: ReplicationController
metadata: {name: rc1}
spec:
  replicas: 2
  selector: {app: rc1}
  template:
    metadata: {labels: {app: rc1}}
    spec: {containers: [{name: c, image: nginx}]}
",
    );
    wait_for("rc pods", 30, || {
        let p = live_pods(&s, "app=rc1");
        (p.len() == 2
            && p.iter().all(|p| {
                p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
                    && p["metadata"]["ownerReferences"][0]["controller"] == true
            }))
        .then_some(())
    })
    .await;
    s.kubectl_ok(&["scale", "rc", "rc1", "--replicas=3"]);
    wait_for("rc scaled", 30, || {
        let st = get_json(&s, &["rc", "rc1"])["status"].clone();
        (st["readyReplicas"] == 3 && st["replicas"] == 3 && live_pods(&s, "app=rc1").len() == 3)
            .then_some(())
    })
    .await;

    // Pods the API refuses: a ReplicaFailure condition and a FailedCreate
    // event; fixing the template clears the condition.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: ReplicationController
metadata: {name: bad}
spec:
  replicas: 2
  selector: {app: bad}
  template:
    metadata: {labels: {app: bad}}
    spec: {containers: [{name: c}]}
",
    );
    let cond = wait_for("ReplicaFailure", 30, || {
        get_json(&s, &["rc", "bad"])["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure").cloned())
    })
    .await;
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "FailedCreate");
    wait_for("FailedCreate event", 20, || {
        has_event(
            &s,
            "FailedCreate",
            "ReplicationController",
            "Error creating: ",
        )
        .then_some(())
    })
    .await;
    s.kubectl_ok(&[
        "patch",
        "rc",
        "bad",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/0/image","value":"nginx"}]"#,
    ]);
    wait_for("bad rc recovered", 30, || {
        let rc = get_json(&s, &["rc", "bad"]);
        let failing = rc["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "ReplicaFailure"));
        (!failing && rc["status"]["readyReplicas"] == 2).then_some(())
    })
    .await;
    // A selector that would not claim the pods it creates: no pods at all
    // (instead of new ones on every sync), and a ReplicaFailure.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: ReplicationController
metadata: {name: mismatch}
spec:
  replicas: 2
  selector: {app: m1}
  template:
    metadata: {labels: {app: m2}}
    spec: {containers: [{name: c, image: nginx}]}
",
    );
    let cond = wait_for("mismatch ReplicaFailure", 30, || {
        get_json(&s, &["rc", "mismatch"])["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure").cloned())
    })
    .await;
    assert!(
        cond["message"].as_str().unwrap().contains("does not match"),
        "{cond}"
    );
    assert!(items(&get_json(&s, &["pods", "-l", "app=m2"])).is_empty());
    s.kubectl_ok(&["scale", "rc", "rc1", "--replicas=0"]);
    wait_for("rc scaled to 0", 30, || {
        live_pods(&s, "app=rc1").is_empty().then_some(())
    })
    .await;
}
