//! DaemonSet and StatefulSet controllers, end to end against a real server
//! with three simulated nodes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Server;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

fn start() -> (Server, Binder) {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    let b = Binder::start(&s);
    (s, b)
}

async fn client(kubeconfig: &std::path::Path) -> Option<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .ok()?;
    kube::Client::try_from(cfg).ok()
}

/// Runs `f` on a thread with its own runtime until dropped.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn<F, Fut>(f: F) -> Background
    where
        F: FnOnce(Arc<AtomicBool>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(f(flag));
        });
        Background {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Binds pods that stay unbound for a while, in case no scheduler runs:
/// DaemonSet pods to the node their affinity names, others to sim-node-0.
/// Pods a scheduler has bound are left alone.
struct Binder(#[allow(dead_code)] Background);

impl Binder {
    fn start(s: &Server) -> Binder {
        let kubeconfig = s.kubeconfig.clone();
        Binder(Background::spawn(move |stop| async move {
            use kube::api::{Api, ListParams, PostParams};
            let Some(client) = client(&kubeconfig).await else {
                return;
            };
            let pods: Api<Pod> = Api::all(client.clone());
            let mut first_seen: HashMap<String, Instant> = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list {
                        let spec = p.spec.clone().unwrap_or_default();
                        let pending =
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
                        if spec.node_name.is_some()
                            || !pending
                            || p.metadata.deletion_timestamp.is_some()
                        {
                            continue;
                        }
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        let seen = *first_seen.entry(uid).or_insert_with(Instant::now);
                        if seen.elapsed() < Duration::from_secs(2) {
                            continue;
                        }
                        let pinned = spec
                            .affinity
                            .and_then(|a| a.node_affinity)
                            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
                            .and_then(|s| {
                                s.node_selector_terms.into_iter().find_map(|t| {
                                    t.match_fields?
                                        .into_iter()
                                        .find(|f| f.key == "metadata.name")?
                                        .values?
                                        .into_iter()
                                        .next()
                                })
                            });
                        let node = pinned.unwrap_or_else(|| "sim-node-0".into());
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let body = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
                            "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
                        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                        let _ = api
                            .create_subresource::<Value, Value>(
                                "binding",
                                &name,
                                &PostParams::default(),
                                &body,
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }))
    }
}

/// One observed change of a pod, in watch (revision) order.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    ready: bool,
    terminating: bool,
    deleted: bool,
}

/// Records every change to pods matching `selector`, from before they exist.
fn record_pods(s: &Server, selector: &str) -> (Background, Arc<Mutex<Vec<Seen>>>) {
    let kubeconfig = s.kubeconfig.clone();
    let selector = selector.to_string();
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let out = log.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let bg = Background::spawn(move |stop| async move {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let Some(client) = client(&kubeconfig).await else {
            return;
        };
        let pods: kube::Api<Pod> = kube::Api::default_namespaced(client);
        let stream = watcher(pods, watcher::Config::default().labels(&selector));
        futures::pin_mut!(stream);
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let ev = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
            let Ok(Some(Ok(ev))) = ev else { continue };
            let (pod, deleted) = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                watcher::Event::InitDone => {
                    let _ = ready_tx.send(());
                    continue;
                }
                watcher::Event::Init => continue,
            };
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            out.lock().unwrap().push(Seen {
                name: pod.metadata.name.clone().unwrap_or_default(),
                ready,
                terminating: pod.metadata.deletion_timestamp.is_some(),
                deleted,
            });
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("pod watch started");
    (bg, log)
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).expect("kubectl -o json output")
}

fn wait_for<T>(s: &Server, secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    s.wait_for(what, secs, f)
}

fn pods(s: &Server, selector: &str) -> Vec<Value> {
    json(s, &["get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The simulated nodes register just after the server is ready.
fn wait_for_nodes(s: &Server) {
    wait_for(s, 20, "three simulated nodes", || {
        let nodes = json(s, &["get", "nodes"]);
        (nodes["items"].as_array().map(Vec::len) == Some(3)).then_some(())
    });
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        && p["metadata"]["deletionTimestamp"].is_null()
}

/// Daemon pods by the node their affinity pins them to.
fn daemon_pods_by_node(s: &Server) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in pods(s, "app=agent") {
        if !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let node =
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
                .as_str()
                .expect("daemon pod pinned to a node")
                .to_string();
        out.entry(node).or_default().push(p);
    }
    out
}

#[test]
fn daemonset_runs_one_pod_per_eligible_node_and_rolls_updates() {
    let (s, _b) = start();
    wait_for_nodes(&s);
    s.kubectl_ok(&["taint", "node", "sim-node-2", "dedicated=db:NoSchedule"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "busybox:1"}]
"#,
    );
    // One pod on each untainted node, none on the tainted one.
    wait_for(&s, 30, "two ready daemon pods", || {
        let ds = json(&s, &["get", "ds", "agent"]);
        (ds["status"]["desiredNumberScheduled"] == 2 && ds["status"]["numberReady"] == 2)
            .then_some(())
    });
    let by_node = daemon_pods_by_node(&s);
    assert_eq!(
        by_node.keys().cloned().collect::<Vec<_>>(),
        vec!["sim-node-0", "sim-node-1"]
    );
    for (node, list) in &by_node {
        assert_eq!(list.len(), 1, "{node}");
        let p = &list[0];
        assert_eq!(p["spec"]["nodeName"], node.as_str());
        assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string());
        let tolerations = p["spec"]["tolerations"].as_array().unwrap();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(tolerations.iter().any(|t| t["key"] == key), "{key}");
        }
    }
    let ds = json(&s, &["get", "ds", "agent"]);
    assert_eq!(ds["status"]["currentNumberScheduled"], 2);
    assert_eq!(ds["status"]["numberMisscheduled"], 0);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 2);
    assert_eq!(ds["status"]["observedGeneration"], 1);

    // A new node gets its own daemon pod.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Node
metadata:
  name: sim-node-9
  labels: {kubernetes.io/hostname: sim-node-9, kubernetes.io/os: linux}
"#,
    );
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    s.kubectl_ok(&[
        "patch",
        "node",
        "sim-node-9",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: sim-node-9, namespace: kube-node-lease}}
spec: {{holderIdentity: sim-node-9, leaseDurationSeconds: 40, renewTime: "{}"}}
"#,
            k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        ),
    );
    wait_for(&s, 30, "a daemon pod on the new node", || {
        let ds = json(&s, &["get", "ds", "agent"]);
        let on_new = daemon_pods_by_node(&s)
            .get("sim-node-9")
            .is_some_and(|l| l.len() == 1 && running_ready(&l[0]));
        (on_new
            && ds["status"]["desiredNumberScheduled"] == 3
            && ds["status"]["numberAvailable"] == 3)
            .then_some(())
    });

    // A new image (and tolerating the taint) rolls out to every node.
    s.kubectl_ok(&[
        "patch",
        "ds",
        "agent",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"agent","image":"busybox:2"}],"tolerations":[{"key":"dedicated","operator":"Exists"}]}}}}"#,
    ]);
    let out = s.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let by_node = wait_for(&s, 30, "updated pods on all four nodes", || {
        let by_node = daemon_pods_by_node(&s);
        let done = by_node.len() == 4
            && by_node
                .values()
                .all(|l| l.len() == 1 && l[0]["spec"]["containers"][0]["image"] == "busybox:2");
        done.then_some(by_node)
    });
    assert!(by_node.contains_key("sim-node-2"));
    let history = s.kubectl_ok(&["rollout", "history", "ds/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, vec!["1", "2"], "{history}");
    let crs = json(&s, &["get", "controllerrevisions"]);
    let hashes: Vec<String> = crs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let current_hash = by_node["sim-node-0"][0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hashes.contains(&format!("agent-{current_hash}")),
        "{hashes:?}"
    );

    // Undo brings the previous template back, without the toleration: the
    // tainted node loses its pod again.
    s.kubectl_ok(&["rollout", "undo", "ds/agent"]);
    wait_for(&s, 60, "the rollback to busybox:1", || {
        let by_node = daemon_pods_by_node(&s);
        (by_node.keys().cloned().collect::<Vec<_>>() == ["sim-node-0", "sim-node-1", "sim-node-9"]
            && by_node.values().all(|l| {
                l.len() == 1
                    && l[0]["spec"]["containers"][0]["image"] == "busybox:1"
                    && running_ready(&l[0])
            }))
        .then_some(())
    });
    let history = s.kubectl_ok(&["rollout", "history", "ds/agent"]);
    assert!(
        history.contains("3"),
        "rollback renumbers revision 1 to 3: {history}"
    );
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, name: web}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: "nginx:1"
        volumeMounts: [{name: www, mountPath: /usr/share/nginx/html}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

fn sts_ready(s: &Server, n: i64) -> bool {
    let sts = json(s, &["get", "sts", "web"]);
    sts["status"]["readyReplicas"].as_i64().unwrap_or(0) == n
        && sts["status"]["replicas"] == n
        && sts["status"]["observedGeneration"] == sts["metadata"]["generation"]
}

#[test]
fn statefulset_ordered_identity_storage_scaling_and_partitioned_update() {
    let (s, _b) = start();
    wait_for_nodes(&s);
    let (_watch, seen) = record_pods(&s, "app=web");
    s.kubectl_stdin_ok(&["apply", "-f", "-"], STATEFULSET);
    wait_for(&s, 60, "three ready replicas", || {
        sts_ready(&s, 3).then_some(())
    });

    // OrderedReady: each pod appears only after its predecessor was ready.
    {
        let log = seen.lock().unwrap();
        let mut first: Vec<String> = Vec::new();
        for (i, ev) in log.iter().enumerate() {
            if first.contains(&ev.name) {
                continue;
            }
            first.push(ev.name.clone());
            let ord: usize = ev.name.strip_prefix("web-").unwrap().parse().unwrap();
            if ord > 0 {
                let prev = format!("web-{}", ord - 1);
                assert!(
                    log[..i].iter().any(|e| e.name == prev && e.ready),
                    "{} created before {prev} was ready: {log:#?}",
                    ev.name
                );
            }
        }
        assert_eq!(first, vec!["web-0", "web-1", "web-2"]);
    }
    // Stable identity and storage.
    let p = json(&s, &["get", "pod", "web-1"]);
    assert_eq!(p["spec"]["hostname"], "web-1");
    assert_eq!(p["spec"]["subdomain"], "nginx");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    let claim = p["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "www")
        .expect("www volume")["persistentVolumeClaim"]["claimName"]
        .clone();
    assert_eq!(claim, "www-web-1");
    for i in 0..3 {
        let pvc = json(&s, &["get", "pvc", &format!("www-web-{i}")]);
        assert_eq!(pvc["metadata"]["labels"]["app"], "web");
    }

    // A deleted member comes back under the same name.
    let old_uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    s.kubectl_ok(&["delete", "pod", "web-1", "--wait=false"]);
    wait_for(&s, 60, "web-1 to be replaced", || {
        let out = s.kubectl(&["get", "pod", "web-1", "-o", "json"]);
        let p: Value = serde_json::from_slice(&out.stdout).ok()?;
        (p["metadata"]["uid"] != old_uid.as_str() && running_ready(&p)).then_some(())
    });
    wait_for(&s, 30, "three ready replicas again", || {
        sts_ready(&s, 3).then_some(())
    });

    // Scale down: highest ordinal first; the claims stay.
    let mark = seen.lock().unwrap().len();
    s.kubectl_ok(&["scale", "sts", "web", "--replicas=1"]);
    wait_for(&s, 60, "one replica", || {
        (sts_ready(&s, 1) && pods(&s, "app=web").len() == 1).then_some(())
    });
    {
        let log = seen.lock().unwrap();
        let gone = |name: &str| {
            log[mark..]
                .iter()
                .position(|e| e.name == name && (e.terminating || e.deleted))
                .unwrap_or_else(|| panic!("{name} never went away: {log:#?}"))
        };
        assert!(gone("web-2") < gone("web-1"), "web-2 must go before web-1");
    }
    for i in 0..3 {
        s.kubectl_ok(&["get", "pvc", &format!("www-web-{i}")]);
    }
    s.kubectl_ok(&["scale", "sts", "web", "--replicas=3"]);
    wait_for(&s, 60, "three ready replicas after scale up", || {
        sts_ready(&s, 3).then_some(())
    });

    // Rolling update with partition 2: only web-2 moves to the new revision.
    s.kubectl_ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}},"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:2"}]}}}}"#,
    ]);
    let out = s.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete"), "{out}");
    let sts = wait_for(&s, 30, "the update revision on web-2", || {
        let sts = json(&s, &["get", "sts", "web"]);
        let web2 = json(&s, &["get", "pod", "web-2"]);
        (sts["status"]["updatedReplicas"] == 1
            && web2["spec"]["containers"][0]["image"] == "nginx:2"
            && running_ready(&web2))
        .then_some(sts)
    });
    let update = sts["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    let current = sts["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(update, current);
    assert_eq!(sts["status"]["currentReplicas"], 2);
    std::thread::sleep(Duration::from_secs(1));
    for (name, image, rev) in [
        ("web-0", "nginx:1", &current),
        ("web-1", "nginx:1", &current),
        ("web-2", "nginx:2", &update),
    ] {
        let p = json(&s, &["get", "pod", name]);
        assert_eq!(p["spec"]["containers"][0]["image"], image, "{name}");
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            rev.as_str(),
            "{name}"
        );
    }
    // Lowering the partition finishes the rollout, in reverse ordinal order.
    s.kubectl_ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    wait_for(&s, 60, "all pods at the update revision", || {
        let sts = json(&s, &["get", "sts", "web"]);
        (sts["status"]["currentRevision"] == update.as_str()
            && sts["status"]["updatedReplicas"] == 3
            && sts_ready(&s, 3))
        .then_some(())
    });
    let history = s.kubectl_ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
}
