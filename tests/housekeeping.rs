//! The housekeeping controllers against a real `skiff server` with
//! simulated nodes: endpoints and endpoint slices, service accounts and the
//! root CA, node lifecycle (taints, eviction), disruption budgets with
//! `kubectl drain`, and pod garbage collection.

mod common;

use common::Server;
use serde_json::Value;

/// Polls `f` every 250 ms until it returns Some, or panics after `secs`.
fn wait_for<T>(s: &Server, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
    s.wait_for(what, secs, f)
}

/// `kubectl get ARGS -o json`, or None when kubectl fails (e.g. not found).
fn get(s: &Server, args: &[&str]) -> Option<Value> {
    let mut all: Vec<&str> = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl(&all);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn pod_running(s: &Server, ns: &str, name: &str) -> bool {
    get(s, &["pod", name, "-n", ns])
        .is_some_and(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
}

fn pod_yaml(name: &str, node: &str, labels: &str, extra_meta: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
{extra_meta}spec:
  nodeName: {node}
  containers:
  - name: c
    image: nginx
    ports:
    - name: http
      containerPort: 8080
{extra_spec}---
"#
    )
}

// ---- endpoints and endpoint slices ----

#[test]
fn endpoints_and_slices_follow_selected_pods() {
    let s = Server::start_with(&["--simulate-nodes", "2"]);
    let mut yaml = String::new();
    yaml += &pod_yaml("web-a", "sim-node-0", "app: web", "", "");
    yaml += &pod_yaml(
        "web-b",
        "sim-node-1",
        "app: web",
        "  annotations: {sim.skiff.io/not-ready: \"true\"}\n",
        "",
    );
    // Selected by nothing: must never show up.
    yaml += &pod_yaml("other", "sim-node-0", "app: other", "", "");
    yaml += r#"apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: manual
spec:
  ports:
  - port: 9000
---
apiVersion: v1
kind: Endpoints
metadata:
  name: manual
subsets:
- addresses:
  - ip: 192.0.2.10
  ports:
  - port: 9000
"#;
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &yaml);

    // Endpoints: web-a ready, web-b not ready, named port resolved.
    let ep = wait_for(
        &s,
        "endpoints with one ready and one unready address",
        30,
        || {
            let ep = get(&s, &["endpoints", "web"])?;
            let sub = ep.pointer("/subsets/0")?;
            (sub["addresses"].as_array()?.len() == 1
                && sub["notReadyAddresses"].as_array()?.len() == 1)
                .then_some(ep)
        },
    );
    let sub = &ep["subsets"][0];
    assert_eq!(ep["subsets"].as_array().unwrap().len(), 1, "{ep}");
    assert_eq!(sub["addresses"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(sub["addresses"][0]["targetRef"]["name"], "web-a");
    assert_eq!(sub["addresses"][0]["nodeName"], "sim-node-0");
    assert_eq!(sub["notReadyAddresses"][0]["targetRef"]["name"], "web-b");
    assert_eq!(sub["notReadyAddresses"][0]["nodeName"], "sim-node-1");
    assert_eq!(sub["ports"][0]["port"], 8080);
    assert_eq!(sub["ports"][0]["name"], "http");
    assert_eq!(sub["ports"][0]["protocol"], "TCP");
    let pod_a = get(&s, &["pod", "web-a"]).unwrap();
    assert_eq!(sub["addresses"][0]["ip"], pod_a["status"]["podIP"]);
    assert_eq!(
        ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");

    // The EndpointSlice says the same with conditions.
    let slice = wait_for(&s, "an endpoint slice with both pods", 30, || {
        let list = get(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let slices = items(&list);
        (slices.len() == 1 && slices[0]["endpoints"].as_array()?.len() == 2)
            .then(|| slices[0].clone())
    });
    let name = slice["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["tier"], "front");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Service");
    assert_eq!(owner["name"], "web");
    assert_eq!(owner["controller"], true);
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["ports"][0]["name"], "http");
    let by_pod = |slice: &Value, pod: &str| -> Option<Value> {
        slice["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["targetRef"]["name"] == pod)
            .cloned()
    };
    let a = by_pod(&slice, "web-a").unwrap();
    assert_eq!(a["conditions"]["ready"], true);
    assert_eq!(a["conditions"]["serving"], true);
    assert_eq!(a["conditions"]["terminating"], false);
    assert_eq!(a["nodeName"], "sim-node-0");
    assert_eq!(a["zone"], "zone-0");
    assert_eq!(a["addresses"][0], pod_a["status"]["podIP"]);
    let b = by_pod(&slice, "web-b").unwrap();
    assert_eq!(b["conditions"]["ready"], false);
    assert_eq!(b["conditions"]["serving"], false);

    // A terminating pod (held by a finalizer): in the slice as terminating,
    // gone from Endpoints.
    let held = pod_yaml(
        "web-c",
        "sim-node-0",
        "app: web",
        "  finalizers: [example.com/hold]\n",
        "",
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &held);
    wait_for(&s, "web-c in the endpoints", 30, || {
        let ep = get(&s, &["endpoints", "web"])?;
        (ep.pointer("/subsets/0/addresses")?.as_array()?.len() == 2).then_some(())
    });
    s.kubectl_ok(&["delete", "pod", "web-c", "--wait=false"]);
    wait_for(&s, "web-c terminating in the slice", 30, || {
        let list = get(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let c = items(&list).iter().find_map(|sl| by_pod(sl, "web-c"))?;
        (c["conditions"]["terminating"] == true
            && c["conditions"]["serving"] == true
            && c["conditions"]["ready"] == false)
            .then_some(())
    });
    wait_for(&s, "web-c out of the endpoints", 30, || {
        let ep = get(&s, &["endpoints", "web"])?;
        let addrs = ep.pointer("/subsets/0/addresses")?.as_array()?.clone();
        (addrs.len() == 1 && addrs[0]["targetRef"]["name"] == "web-a").then_some(())
    });
    s.kubectl_ok(&[
        "patch",
        "pod",
        "web-c",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);

    // Deleting a pod removes it everywhere.
    s.kubectl_ok(&["delete", "pod", "web-b", "--wait=true", "--timeout=30s"]);
    wait_for(&s, "web-b out of the endpoints", 30, || {
        let ep = get(&s, &["endpoints", "web"])?;
        let sub = ep.pointer("/subsets/0")?;
        (sub.get("notReadyAddresses").is_none() && sub["addresses"].as_array()?.len() == 1)
            .then_some(())
    });
    wait_for(&s, "the slice to list web-a only", 30, || {
        let list = get(
            &s,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        )?;
        let all: Vec<Value> = items(&list)
            .iter()
            .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
            .collect();
        (all.len() == 1 && all[0]["targetRef"]["name"] == "web-a").then_some(())
    });

    // The selectorless service's hand-made endpoints are left alone and get
    // no managed slice.
    let manual = get(&s, &["endpoints", "manual"]).expect("manual endpoints kept");
    assert_eq!(manual["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
    assert!(manual["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"].is_null());
    let managed = get(
        &s,
        &[
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=manual,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
        ],
    )
    .unwrap();
    assert!(items(&managed).is_empty(), "{managed}");

    // Deleting the service takes its Endpoints and slices along.
    s.kubectl_ok(&["delete", "service", "web"]);
    wait_for(
        &s,
        "endpoints and slices of the deleted service to go",
        30,
        || {
            let slices = get(
                &s,
                &["endpointslices", "-l", "kubernetes.io/service-name=web"],
            )?;
            (get(&s, &["endpoints", "web"]).is_none() && items(&slices).is_empty()).then_some(())
        },
    );
}

// ---- service accounts and the root CA ----

#[test]
fn every_namespace_gets_default_service_account_and_root_ca() {
    let s = Server::start();
    let ca =
        std::fs::read_to_string(s.dir.path().join("server/tls/server-ca.crt")).expect("cluster CA");
    s.kubectl_ok(&["create", "namespace", "team-a"]);
    let sa = wait_for(&s, "the default service account", 20, || {
        get(&s, &["serviceaccount", "default", "-n", "team-a"])
    });
    let cm = wait_for(&s, "kube-root-ca.crt", 20, || {
        get(&s, &["configmap", "kube-root-ca.crt", "-n", "team-a"])
    });
    assert_eq!(cm["data"]["ca.crt"].as_str(), Some(ca.as_str()));
    assert!(
        cm["metadata"]["annotations"]["kubernetes.io/description"]
            .as_str()
            .is_some_and(|d| d.contains("CA bundle"))
    );
    // Built-in namespaces have them too.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        wait_for(&s, &format!("default SA in {ns}"), 20, || {
            get(&s, &["serviceaccount", "default", "-n", ns])
        });
        wait_for(&s, &format!("root CA in {ns}"), 20, || {
            get(&s, &["configmap", "kube-root-ca.crt", "-n", ns])
        });
    }

    // Deleted: recreated (a new object).
    s.kubectl_ok(&["delete", "serviceaccount", "default", "-n", "team-a"]);
    wait_for(&s, "the default service account to come back", 20, || {
        let again = get(&s, &["serviceaccount", "default", "-n", "team-a"])?;
        (again["metadata"]["uid"] != sa["metadata"]["uid"]).then_some(())
    });
    s.kubectl_ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "team-a"]);
    wait_for(&s, "kube-root-ca.crt to come back", 20, || {
        let again = get(&s, &["configmap", "kube-root-ca.crt", "-n", "team-a"])?;
        (again["metadata"]["uid"] != cm["metadata"]["uid"]
            && again["data"]["ca.crt"].as_str() == Some(ca.as_str()))
        .then_some(())
    });
    // Edited: restored.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ]);
    wait_for(&s, "kube-root-ca.crt to be restored", 20, || {
        let again = get(&s, &["configmap", "kube-root-ca.crt", "-n", "team-a"])?;
        (again["data"]["ca.crt"].as_str() == Some(ca.as_str())).then_some(())
    });
}

// ---- node lifecycle ----

fn taint_keys(node: &Value) -> Vec<(String, String)> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["key"].as_str().unwrap_or("").to_string(),
                        t["effect"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lost_node_is_tainted_and_its_pods_evicted_then_recovers() {
    let s = Server::start_with(&[
        "--simulate-nodes",
        "2",
        "--kube-controller-manager-arg",
        "node-monitor-grace-period=20s",
        "--kube-controller-manager-arg=node-monitor-period=1s",
    ]);
    let mut yaml = pod_yaml(
        "short",
        "sim-node-1",
        "app: lost",
        "",
        "  tolerations:\n  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n",
    );
    yaml += &pod_yaml("patient", "sim-node-1", "app: lost", "", "");
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &yaml);
    wait_for(&s, "pods running", 30, || {
        (pod_running(&s, "default", "short") && pod_running(&s, "default", "patient")).then_some(())
    });
    // The API server gave `patient` the default 300 s tolerations.
    let patient = get(&s, &["pod", "patient"]).unwrap();
    assert!(patient["spec"]["tolerations"].to_string().contains("300"));

    // A NoExecute taint put by hand evicts the pods that do not tolerate it
    // at once, and spares those that do.
    let mut yaml = pod_yaml("intolerant", "sim-node-0", "app: taint", "", "");
    yaml += &pod_yaml(
        "tolerant",
        "sim-node-0",
        "app: taint",
        "",
        "  tolerations:\n  - {key: dedicated, operator: Exists, effect: NoExecute}\n",
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &yaml);
    wait_for(&s, "pods running on sim-node-0", 30, || {
        (pod_running(&s, "default", "intolerant") && pod_running(&s, "default", "tolerant"))
            .then_some(())
    });
    s.kubectl_ok(&["taint", "node", "sim-node-0", "dedicated=x:NoExecute"]);
    wait_for(&s, "the intolerant pod to be evicted", 30, || {
        get(&s, &["pod", "intolerant"]).is_none().then_some(())
    });
    let tolerant = get(&s, &["pod", "tolerant"]).expect("tolerating pod kept");
    assert!(tolerant["metadata"]["deletionTimestamp"].is_null());
    s.kubectl_ok(&["taint", "node", "sim-node-0", "dedicated=x:NoExecute-"]);

    s.kubectl_ok(&[
        "annotate",
        "node",
        "sim-node-1",
        "sim.skiff.io/stopped=true",
    ]);
    let node = wait_for(&s, "the lost node to be Unknown and tainted", 90, || {
        let n = get(&s, &["node", "sim-node-1"])?;
        let ready = condition(&n, "Ready")?;
        let keys = taint_keys(&n);
        (ready["status"] == "Unknown"
            && keys.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
            && keys.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into())))
        .then_some(n)
    });
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let no_execute = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["effect"] == "NoExecute")
        .unwrap();
    assert!(no_execute["timeAdded"].is_string(), "{no_execute}");
    let table = s.kubectl_ok(&["get", "nodes"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("sim-node-1"))
        .unwrap_or_default();
    assert!(line.contains("NotReady"), "{table}");

    // The pod tolerating 2 s is evicted; the one tolerating 300 s stays but
    // is no longer Ready.
    wait_for(&s, "the 2 s-tolerating pod to be evicted", 30, || {
        get(&s, &["pod", "short"]).is_none().then_some(())
    });
    wait_for(&s, "the remaining pod to be marked not ready", 30, || {
        let p = get(&s, &["pod", "patient"])?;
        (p["metadata"]["deletionTimestamp"].is_null()
            && condition(&p, "Ready")?["status"] == "False")
            .then_some(())
    });
    // The healthy node is untouched.
    let healthy = get(&s, &["node", "sim-node-0"]).unwrap();
    assert_eq!(condition(&healthy, "Ready").unwrap()["status"], "True");
    assert!(taint_keys(&healthy).is_empty(), "{healthy}");

    // Back: Ready again, taints gone.
    s.kubectl_ok(&["annotate", "node", "sim-node-1", "sim.skiff.io/stopped-"]);
    wait_for(&s, "the node to be Ready and untainted again", 60, || {
        let n = get(&s, &["node", "sim-node-1"])?;
        (condition(&n, "Ready")?["status"] == "True" && taint_keys(&n).is_empty()).then_some(())
    });
    assert!(
        get(&s, &["pod", "patient"]).is_some(),
        "the tolerating pod was evicted"
    );
}

// ---- disruption budgets and drain ----

fn drain(s: &Server, node: &str) -> std::process::Output {
    s.kubectl(&[
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=5s",
    ])
}

#[test]
fn drain_honours_pod_disruption_budget() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    let mut yaml = pod_yaml("db-a", "sim-node-0", "app: db", "", "");
    yaml += &pod_yaml("db-b", "sim-node-1", "app: db", "", "");
    yaml += r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: db
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: db}
"#;
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &yaml);
    let pdb = wait_for(&s, "the budget to count two healthy pods", 30, || {
        let p = get(&s, &["pdb", "db"])?;
        (p["status"]["currentHealthy"] == 2).then_some(p)
    });
    let st = &pdb["status"];
    assert_eq!(st["desiredHealthy"], 2);
    assert_eq!(st["expectedPods"], 2);
    assert_eq!(st["disruptionsAllowed"], 0);
    assert_eq!(st["observedGeneration"], pdb["metadata"]["generation"]);
    let cond = condition(&pdb, "DisruptionAllowed").unwrap();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "InsufficientPods");

    // No disruption allowed: the drain cannot evict and gives up.
    let out = drain(&s, "sim-node-0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "drain should fail: {stderr}");
    assert!(stderr.contains("disruption budget"), "{stderr}");
    assert!(get(&s, &["pod", "db-a"]).is_some());

    // A third ready pod: one disruption allowed, the drain goes through.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod_yaml("db-c", "sim-node-2", "app: db", "", ""),
    );
    let pdb = wait_for(&s, "one disruption allowed", 30, || {
        let p = get(&s, &["pdb", "db"])?;
        (p["status"]["disruptionsAllowed"] == 1).then_some(p)
    });
    let cond = condition(&pdb, "DisruptionAllowed").unwrap();
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "SufficientPods");
    let out = drain(&s, "sim-node-0");
    assert!(
        out.status.success(),
        "drain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get(&s, &["pod", "db-a"]).is_none());
    // The evicted pod is gone, so the budget forgets it.
    wait_for(&s, "the budget to settle after the eviction", 30, || {
        let p = get(&s, &["pdb", "db"])?;
        let disrupted = p["status"]["disruptedPods"]
            .as_object()
            .map_or(0, |m| m.len());
        (p["status"]["currentHealthy"] == 2
            && p["status"]["disruptionsAllowed"] == 0
            && disrupted == 0)
            .then_some(())
    });

    // Lowering minAvailable allows one more disruption.
    s.kubectl_ok(&[
        "patch",
        "pdb",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ]);
    wait_for(&s, "a disruption allowed again", 30, || {
        let p = get(&s, &["pdb", "db"])?;
        (p["status"]["disruptionsAllowed"] == 1
            && p["status"]["desiredHealthy"] == 1
            && p["status"]["observedGeneration"] == p["metadata"]["generation"])
            .then_some(())
    });
    let out = drain(&s, "sim-node-1");
    assert!(
        out.status.success(),
        "drain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get(&s, &["pod", "db-b"]).is_none());
    // A drained node is cordoned: the unschedulable taint follows.
    wait_for(&s, "the unschedulable taint", 30, || {
        let n = get(&s, &["node", "sim-node-1"])?;
        taint_keys(&n)
            .contains(&(
                "node.kubernetes.io/unschedulable".into(),
                "NoSchedule".into(),
            ))
            .then_some(())
    });
}

// ---- pod garbage collection ----

#[test]
fn pod_gc_removes_orphaned_and_excess_terminated_pods() {
    let s = Server::start_with(&[
        "--simulate-nodes",
        "2",
        "--kube-controller-manager-arg",
        "terminated-pod-gc-threshold=2",
    ]);
    // Orphan: a pod on a node that gets deleted.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod_yaml("orphan", "sim-node-1", "app: gc", "", ""),
    );
    wait_for(&s, "the orphan-to-be running", 30, || {
        pod_running(&s, "default", "orphan").then_some(())
    });
    s.kubectl_ok(&["delete", "node", "sim-node-1"]);

    // Four pods that finish; only the two newest are kept.
    for i in 0..4 {
        s.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &pod_yaml(
                &format!("done-{i}"),
                "sim-node-0",
                "app: gc",
                "  annotations: {sim.skiff.io/complete-after: \"0.1\"}\n",
                "",
            ),
        );
    }
    wait_for(
        &s,
        "the two oldest finished pods to be collected",
        60,
        || {
            let list = get(&s, &["pods", "-l", "app=gc"])?;
            let mut names: Vec<String> = items(&list)
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .filter(|n| n.starts_with("done-"))
                .collect();
            names.sort();
            (names == ["done-2", "done-3"]).then_some(())
        },
    );
    let kept = get(&s, &["pod", "done-3"]).unwrap();
    assert_eq!(kept["status"]["phase"], "Succeeded");

    // A pod terminating on a node declared out of service (not ready, no
    // kubelet to finish it) is force-deleted.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: dead}\nspec:\n  taints:\n  \
         - {key: node.kubernetes.io/out-of-service, value: nodeshutdown, effect: NoSchedule}\n",
    );
    s.kubectl_ok(&[
        "patch",
        "node",
        "dead",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}"#,
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod_yaml("stuck", "dead", "app: gc", "", ""),
    );
    s.kubectl_ok(&[
        "delete",
        "pod",
        "stuck",
        "--grace-period=600",
        "--wait=false",
    ]);
    let stuck = get(&s, &["pod", "stuck"]).expect("terminating pod");
    assert!(stuck["metadata"]["deletionTimestamp"].is_string());
    wait_for(
        &s,
        "the terminating pod on the dead node to be collected",
        60,
        || get(&s, &["pod", "stuck"]).is_none().then_some(()),
    );

    wait_for(&s, "the orphaned pod to be collected", 90, || {
        get(&s, &["pod", "orphan"]).is_none().then_some(())
    });
}

#[test]
fn budget_expects_pods_from_the_owners_scale() {
    let s = Server::start_with(&["--simulate-nodes", "1"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: fleets.example.com
spec:
  group: example.com
  names: {kind: Fleet, plural: fleets, singular: fleet}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#,
    );
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/fleets.example.com",
        "--timeout=20s",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Fleet\nmetadata: {name: f}\nspec: {replicas: 4}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-a-controller}\n",
    );
    let fleet_uid = get(&s, &["fleet", "f"]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let cm_uid = get(&s, &["configmap", "not-a-controller"]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let owned = |name: &str, labels: &str, kind: &str, api: &str, owner: &str, uid: &str| {
        pod_yaml(
            name,
            "sim-node-0",
            labels,
            &format!(
                "  ownerReferences:\n  - {{apiVersion: {api}, kind: {kind}, name: {owner}, uid: {uid}, controller: true}}\n"
            ),
            "",
        )
    };
    let mut yaml = owned(
        "f-1",
        "app: fleet",
        "Fleet",
        "example.com/v1",
        "f",
        &fleet_uid,
    );
    yaml += &owned(
        "f-2",
        "app: fleet",
        "Fleet",
        "example.com/v1",
        "f",
        &fleet_uid,
    );
    yaml += &owned(
        "odd",
        "app: odd",
        "ConfigMap",
        "v1",
        "not-a-controller",
        &cm_uid,
    );
    yaml += r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: fleet}
spec:
  maxUnavailable: 25%
  selector: {matchLabels: {app: fleet}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: odd}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: odd}}
"#;
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &yaml);
    // 4 expected from the Fleet's scale, 25% of 4 rounds up to 1 → 3
    // desired, 2 healthy → no disruption.
    wait_for(&s, "the budget to use the owner's scale", 30, || {
        let st = get(&s, &["pdb", "fleet"])?["status"].clone();
        (st["currentHealthy"] == 2
            && st["expectedPods"] == 4
            && st["desiredHealthy"] == 3
            && st["disruptionsAllowed"] == 0)
            .then_some(())
    });
    // Scaled down to 2: 25% of 2 rounds up to 1 → 1 desired, 1 allowed
    // (recomputed on the next pod event, as upstream).
    s.kubectl_ok(&["scale", "fleet", "f", "--replicas=2"]);
    s.kubectl_ok(&["annotate", "pod", "f-1", "touch=1"]);
    wait_for(&s, "the budget to follow the new scale", 30, || {
        let st = get(&s, &["pdb", "fleet"])?["status"].clone();
        (st["expectedPods"] == 2 && st["desiredHealthy"] == 1 && st["disruptionsAllowed"] == 1)
            .then_some(())
    });
    // A controller without a scale: the budget cannot be computed and
    // allows nothing.
    let odd = wait_for(&s, "the unscalable owner's budget to fail safe", 30, || {
        let p = get(&s, &["pdb", "odd"])?;
        (condition(&p, "DisruptionAllowed")?["reason"] == "SyncFailed").then_some(p)
    });
    let cond = condition(&odd, "DisruptionAllowed").unwrap();
    assert_eq!(cond["status"], "False");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("found no controllers for pod"),
        "{cond}"
    );
    assert_eq!(odd["status"]["disruptionsAllowed"], 0);
}

#[test]
fn claims_bind_to_matching_volumes_and_release_them() {
    let s = Server::start();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: small}
spec: {storageClassName: manual, capacity: {storage: 100Mi}, accessModes: [ReadWriteOnce], hostPath: {path: /tmp/skiff-pv-small}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: big}
spec: {storageClassName: manual, capacity: {storage: 2Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /tmp/skiff-pv-big}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {storageClassName: manual, accessModes: [ReadWriteOnce], resources: {requests: {storage: 500Mi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nothing-fits}
spec: {storageClassName: manual, accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Gi}}}
"#,
    );
    // The only volume large enough is chosen; both sides say Bound.
    let pvc = wait_for(&s, "claim bound", 20, || {
        get(&s, &["pvc", "data"]).filter(|v| v["status"]["phase"] == "Bound")
    });
    assert_eq!(pvc["spec"]["volumeName"], "big");
    assert_eq!(pvc["status"]["capacity"]["storage"], "2Gi");
    let pv = get(&s, &["pv", "big"]).unwrap();
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(
        get(&s, &["pv", "small"]).unwrap()["status"]["phase"],
        "Available"
    );
    // No volume fits: Pending, with an event saying why.
    assert_eq!(
        get(&s, &["pvc", "nothing-fits"]).unwrap()["status"]["phase"],
        "Pending"
    );
    wait_for(&s, "FailedBinding event", 20, || {
        let out = s.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=nothing-fits",
            "-o",
            "json",
        ]);
        out.contains("FailedBinding").then_some(())
    });
    // Deleting the claim releases a Retain volume.
    s.kubectl_ok(&["delete", "pvc", "data"]);
    wait_for(&s, "volume released", 20, || {
        get(&s, &["pv", "big"]).filter(|v| v["status"]["phase"] == "Released")
    });
}
