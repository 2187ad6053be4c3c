//! The built-in scheduler, observed as a user sees it: where pods land,
//! their PodScheduled condition, and the scheduler's Events.

mod common;

use common::Server;
use serde_json::Value;

const PODGROUP_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/podgroup-crd.yaml");

/// Polls `f` until it returns Some or `secs` pass.
fn wait_for<T>(secs: u64, what: &str, s: &Server, f: impl FnMut() -> Option<T>) -> T {
    s.wait_for(what, secs, f)
}

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).expect("kubectl JSON")
}

fn pod(s: &Server, name: &str) -> Value {
    get_json(s, &["pod", name])
}

fn node_of(s: &Server, name: &str) -> Option<String> {
    pod(s, name)["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn wait_bound(s: &Server, name: &str) -> String {
    wait_for(30, &format!("pod {name} to be bound"), s, || {
        node_of(s, name)
    })
}

/// Waits until `n` nodes exist and are Ready.
fn wait_nodes(s: &Server, n: usize) {
    wait_for(30, &format!("{n} ready nodes"), s, || {
        let nodes = get_json(s, &["nodes"]);
        let ready = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready >= n).then_some(())
    });
}

/// Messages of the events with `reason` about pod `name`.
fn event_messages(s: &Server, name: &str, reason: &str) -> Vec<String> {
    let sel = format!("involvedObject.name={name},reason={reason}");
    let evs = get_json(s, &["events", "--field-selector", &sel]);
    evs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for an event with `reason` on pod `name` whose message contains
/// `contains`; returns that message.
fn wait_event(s: &Server, name: &str, reason: &str, contains: &str) -> String {
    wait_for(
        30,
        &format!("{reason} event on {name} containing {contains:?}"),
        s,
        || {
            event_messages(s, name, reason)
                .into_iter()
                .find(|m| m.contains(contains))
        },
    )
}

fn scheduled_condition(s: &Server, name: &str) -> Option<(String, String, String)> {
    let p = pod(s, name);
    let c = p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
        c["message"].as_str().unwrap_or("").to_string(),
    ))
}

/// A pod manifest: `extra` is merged into the container (resources,
/// ports) and `spec` into the pod spec.
fn pod_yaml(name: &str, labels: &[(&str, &str)], container: Value, spec: Value) -> String {
    let mut c = serde_json::json!({"name": "app", "image": "registry.local/app:1"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let mut sp = serde_json::json!({"containers": [c]});
    if let (Some(sp), Some(extra)) = (sp.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            sp.insert(k.clone(), v.clone());
        }
    }
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": sp})
    .to_string()
}

fn create(s: &Server, manifest: &str) {
    s.kubectl_stdin_ok(&["create", "-f", "-"], manifest);
}

fn cpu(q: &str) -> Value {
    serde_json::json!({"resources": {"requests": {"cpu": q}}})
}

/// Registers a Node by hand (no agent): labels, allocatable and Ready.
fn add_node(s: &Server, name: &str, cpu: &str, labels: &[(&str, &str)]) {
    add_node_with(s, name, cpu, labels, true, false);
}

fn add_node_with(
    s: &Server,
    name: &str,
    cpu: &str,
    labels: &[(&str, &str)],
    ready: bool,
    cordoned: bool,
) {
    let mut l: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    l.insert("kubernetes.io/hostname".into(), Value::from(name));
    create(
        s,
        &serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": l}, "spec": {"unschedulable": cordoned}})
        .to_string(),
    );
    let now = "2025-01-01T00:00:00Z";
    let res = serde_json::json!({"cpu": cpu, "memory": "16Gi", "pods": "110"});
    let status = serde_json::json!({"status": {"capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    s.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

#[test]
fn pods_spread_over_nodes_least_allocated() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    wait_nodes(&s, 3);
    for i in 0..6 {
        create(&s, &pod_yaml(&format!("p{i}"), &[], cpu("1"), Value::Null));
    }
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        *per_node
            .entry(wait_bound(&s, &format!("p{i}")))
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "least-allocated spreads identical pods evenly: {per_node:?}"
    );
    let node = node_of(&s, "p0").unwrap();
    let msg = wait_event(&s, "p0", "Scheduled", "Successfully assigned");
    assert_eq!(msg, format!("Successfully assigned default/p0 to {node}"));
    let (status, _, _) = scheduled_condition(&s, "p0").unwrap();
    assert_eq!(status, "True");
}

#[test]
fn node_selector_and_required_node_affinity() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    wait_nodes(&s, 3);
    s.kubectl_ok(&["label", "node", "sim-node-0", "rank=3"]);
    s.kubectl_ok(&["label", "node", "sim-node-1", "rank=7"]);
    s.kubectl_ok(&["label", "node", "sim-node-2", "rank=12"]);
    let aff = |terms: Value| {
        serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": terms}}}})
    };
    let expr = |key: &str, op: &str, values: &[&str]| serde_json::json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
    create(
        &s,
        &pod_yaml(
            "by-selector",
            &[],
            Value::Null,
            serde_json::json!({"nodeSelector": {"topology.kubernetes.io/zone": "zone-1"}}),
        ),
    );
    create(
        &s,
        &pod_yaml(
            "by-in",
            &[],
            Value::Null,
            aff(expr("kubernetes.io/hostname", "In", &["sim-node-2"])),
        ),
    );
    create(
        &s,
        &pod_yaml(
            "by-notin",
            &[],
            Value::Null,
            aff(expr(
                "kubernetes.io/hostname",
                "NotIn",
                &["sim-node-0", "sim-node-2"],
            )),
        ),
    );
    create(
        &s,
        &pod_yaml("by-gt", &[], Value::Null, aff(expr("rank", "Gt", &["10"]))),
    );
    create(
        &s,
        &pod_yaml("by-lt", &[], Value::Null, aff(expr("rank", "Lt", &["5"]))),
    );
    create(
        &s,
        &pod_yaml(
            "by-field",
            &[],
            Value::Null,
            aff(serde_json::json!([{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["sim-node-1"]}]}])),
        ),
    );
    // Terms are ORed: the second one matches sim-node-0 only.
    create(
        &s,
        &pod_yaml(
            "by-terms",
            &[],
            Value::Null,
            aff(serde_json::json!([
                {"matchExpressions": [{"key": "no-such-label", "operator": "Exists"}]},
                {"matchExpressions": [{"key": "rank", "operator": "In", "values": ["3"]}]}])),
        ),
    );
    assert_eq!(wait_bound(&s, "by-selector"), "sim-node-1");
    assert_eq!(wait_bound(&s, "by-in"), "sim-node-2");
    assert_eq!(wait_bound(&s, "by-notin"), "sim-node-1");
    assert_eq!(wait_bound(&s, "by-gt"), "sim-node-2");
    assert_eq!(wait_bound(&s, "by-lt"), "sim-node-0");
    assert_eq!(wait_bound(&s, "by-field"), "sim-node-1");
    assert_eq!(wait_bound(&s, "by-terms"), "sim-node-0");

    create(
        &s,
        &pod_yaml(
            "nowhere",
            &[],
            Value::Null,
            serde_json::json!({"nodeSelector": {"topology.kubernetes.io/zone": "zone-9"}}),
        ),
    );
    let msg = wait_event(&s, "nowhere", "FailedScheduling", "0/3");
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[test]
fn untolerated_taint_then_toleration() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    wait_nodes(&s, 3);
    for n in ["sim-node-0", "sim-node-1", "sim-node-2"] {
        s.kubectl_ok(&["taint", "node", n, "dedicated=gpu:NoSchedule"]);
    }
    create(&s, &pod_yaml("plain", &[], Value::Null, Value::Null));
    let want = "0/3 nodes are available: 3 node(s) had untolerated taint {dedicated: gpu}. \
                preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let msg = wait_event(&s, "plain", "FailedScheduling", "0/3");
    assert_eq!(msg, want);
    let (status, reason, message) = wait_for(30, "PodScheduled=False", &s, || {
        scheduled_condition(&s, "plain").filter(|c| c.0 == "False")
    });
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unschedulable")
    );
    assert_eq!(message, want);
    assert_eq!(pod(&s, "plain")["status"]["phase"], "Pending");

    create(
        &s,
        &pod_yaml(
            "tolerant",
            &[],
            Value::Null,
            serde_json::json!({"tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        ),
    );
    assert!(wait_bound(&s, "tolerant").starts_with("sim-node-"));
    assert_eq!(node_of(&s, "plain"), None);

    // Removing the taint from one node is a cluster event: the waiting pod
    // is retried and lands there.
    s.kubectl_ok(&["taint", "node", "sim-node-1", "dedicated=gpu:NoSchedule-"]);
    assert_eq!(wait_bound(&s, "plain"), "sim-node-1");
}

#[test]
fn insufficient_cpu_message() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    wait_nodes(&s, 3);
    s.kubectl_ok(&["taint", "node", "sim-node-0", "dedicated=gpu:NoSchedule"]);
    s.kubectl_ok(&["taint", "node", "sim-node-1", "dedicated=gpu:NoSchedule"]);
    // More than a node has: preemption cannot help anywhere.
    create(&s, &pod_yaml("huge", &[], cpu("9"), Value::Null));
    let msg = wait_event(&s, "huge", "FailedScheduling", "0/3");
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // Fits the node's size but not what is left: preemption was tried.
    create(&s, &pod_yaml("filler", &[], cpu("5"), Value::Null));
    assert_eq!(wait_bound(&s, "filler"), "sim-node-2");
    create(&s, &pod_yaml("big", &[], cpu("5"), Value::Null));
    let msg = wait_event(&s, "big", "FailedScheduling", "0/3");
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn anti_affinity_across_hostnames() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    wait_nodes(&s, 3);
    let anti = serde_json::json!({"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "web"}},
            "topologyKey": "kubernetes.io/hostname"}]}}});
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        create(
            &s,
            &pod_yaml(&name, &[("app", "web")], Value::Null, anti.clone()),
        );
        // One at a time, so each decision sees the previous pods.
        nodes.insert(wait_bound(&s, &name));
    }
    assert_eq!(nodes.len(), 3, "one web pod per node: {nodes:?}");
    create(
        &s,
        &pod_yaml("web-3", &[("app", "web")], Value::Null, anti.clone()),
    );
    let msg = wait_event(&s, "web-3", "FailedScheduling", "0/3");
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // An unrelated pod that the web pods' anti-affinity does not select
    // still fits; one they select (app=web, no own rules) does not.
    create(
        &s,
        &pod_yaml("other", &[("app", "db")], Value::Null, Value::Null),
    );
    wait_bound(&s, "other");
    create(
        &s,
        &pod_yaml("web-plain", &[("app", "web")], Value::Null, Value::Null),
    );
    let msg = wait_event(&s, "web-plain", "FailedScheduling", "0/3");
    assert!(
        msg.starts_with(
            "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
        ),
        "{msg}"
    );
    // Deleting one web pod frees its node for one of the waiting ones.
    let freed = node_of(&s, "web-0").unwrap();
    s.kubectl_ok(&["delete", "pod", "web-0", "--wait=false"]);
    let placed = wait_for(30, "a waiting web pod to be bound", &s, || {
        node_of(&s, "web-3").or_else(|| node_of(&s, "web-plain"))
    });
    assert_eq!(placed, freed);
}

#[test]
fn topology_spread_across_zones() {
    let s = Server::start_with(&["--simulate-nodes", "6"]);
    wait_nodes(&s, 6);
    // Two matching pods already in zone-0 (sim-node-0), placed by hand.
    for i in 0..2 {
        create(
            &s,
            &pod_yaml(
                &format!("pinned-{i}"),
                &[("app", "spread")],
                Value::Null,
                serde_json::json!({"nodeName": "sim-node-0"}),
            ),
        );
    }
    let constraint = |policy: &str| {
        serde_json::json!([{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "nodeAffinityPolicy": policy,
            "labelSelector": {"matchLabels": {"app": "spread"}}}])
    };
    // Confined to zone-0 while every zone counts as a domain: zone-0 is
    // already two ahead, so the constraint blocks it.
    create(
        &s,
        &pod_yaml(
            "skewed",
            &[("app", "spread")],
            Value::Null,
            serde_json::json!({"topologySpreadConstraints": constraint("Ignore"),
                "nodeSelector": {"topology.kubernetes.io/zone": "zone-0"}}),
        ),
    );
    let msg = wait_event(&s, "skewed", "FailedScheduling", "0/6");
    assert_eq!(
        msg,
        "0/6 nodes are available: 2 node(s) didn't match pod topology spread constraints, \
         4 node(s) didn't match Pod's node affinity/selector. preemption: 0/6 nodes are available: \
         2 No preemption victims found for incoming pod, 4 Preemption is not helpful for scheduling."
    );
    let zone = |node: &str| {
        let n = get_json(&s, &["node", node]);
        n["metadata"]["labels"]["topology.kubernetes.io/zone"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut zones = std::collections::BTreeMap::<String, usize>::new();
    zones.insert("zone-0".into(), 2);
    let spread = serde_json::json!({"topologySpreadConstraints": constraint("Honor")});
    for i in 0..4 {
        let name = format!("s{i}");
        create(
            &s,
            &pod_yaml(&name, &[("app", "spread")], Value::Null, spread.clone()),
        );
        let node = wait_bound(&s, &name);
        *zones.entry(zone(&node)).or_default() += 1;
    }
    // zone-0 got none of them although it has an empty node (sim-node-3).
    assert_eq!(
        zones.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{zones:?}"
    );
    // Now the zones are even, so the blocked pod fits in zone-0.
    let node = wait_bound(&s, "skewed");
    assert_eq!(zone(&node), "zone-0");
}

#[test]
fn host_port_conflict() {
    let s = Server::start_with(&["--simulate-nodes", "2"]);
    wait_nodes(&s, 2);
    let port = serde_json::json!({"ports": [{"containerPort": 80, "hostPort": 8080}]});
    create(&s, &pod_yaml("hp-a", &[], port.clone(), Value::Null));
    create(&s, &pod_yaml("hp-b", &[], port.clone(), Value::Null));
    let a = wait_bound(&s, "hp-a");
    let b = wait_bound(&s, "hp-b");
    assert_ne!(a, b, "the same host port cannot be used twice on a node");
    create(&s, &pod_yaml("hp-c", &[], port.clone(), Value::Null));
    let msg = wait_event(&s, "hp-c", "FailedScheduling", "0/2");
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports. \
         preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    // A different port, or UDP on the same number, is no conflict.
    let udp =
        serde_json::json!({"ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]});
    create(&s, &pod_yaml("hp-udp", &[], udp, Value::Null));
    wait_bound(&s, "hp-udp");
}

#[test]
fn preemption_of_lower_priority_pod() {
    let s = Server::start_with(&["--simulate-nodes", "1"]);
    wait_nodes(&s, 1);
    s.kubectl_ok(&["create", "priorityclass", "low", "--value=100"]);
    s.kubectl_ok(&["create", "priorityclass", "high", "--value=100000"]);
    create(
        &s,
        &pod_yaml(
            "low-pod",
            &[],
            cpu("6"),
            serde_json::json!({"priorityClassName": "low"}),
        ),
    );
    assert_eq!(wait_bound(&s, "low-pod"), "sim-node-0");
    let low_uid = pod(&s, "low-pod")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // Same priority: no preemption.
    create(
        &s,
        &pod_yaml(
            "low-2",
            &[],
            cpu("6"),
            serde_json::json!({"priorityClassName": "low"}),
        ),
    );
    let msg = wait_event(&s, "low-2", "FailedScheduling", "0/1");
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );

    create(
        &s,
        &pod_yaml(
            "high-pod",
            &[],
            cpu("6"),
            serde_json::json!({"priorityClassName": "high"}),
        ),
    );
    assert_eq!(wait_bound(&s, "high-pod"), "sim-node-0");
    // The victim is gone (or a new object under that name).
    wait_for(30, "low-pod deleted", &s, || {
        let out = s.kubectl(&["get", "pod", "low-pod", "-o", "jsonpath={.metadata.uid}"]);
        let uid = String::from_utf8_lossy(&out.stdout).to_string();
        (uid != low_uid).then_some(())
    });
    let msg = wait_event(&s, "low-pod", "Preempted", "Preempted by pod");
    let high_uid = pod(&s, "high-pod")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        format!("Preempted by pod {high_uid} on node sim-node-0")
    );
    // The lower-priority pod waiting for the same space stays pending.
    assert_eq!(node_of(&s, "low-2"), None);
}

#[test]
fn gang_binds_all_or_nothing() {
    let s = Server::start_with(&["--simulate-nodes", "2"]);
    wait_nodes(&s, 2);
    s.kubectl_ok(&["apply", "-f", PODGROUP_CRD]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/podgroups.scheduling.x-k8s.io",
        "--timeout=20s",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata:\n  name: trainers\nspec:\n  minMember: 3\n",
    );
    // Each member takes most of a node: only two fit on two nodes.
    let mut yaml = String::new();
    for i in 0..3 {
        yaml.push_str(&pod_yaml(
            &format!("trainer-{i}"),
            &[("scheduling.x-k8s.io/pod-group", "trainers")],
            cpu("5"),
            Value::Null,
        ));
        yaml.push('\n');
    }
    create(&s, &yaml);
    let msg = wait_event(&s, "trainer-0", "FailedScheduling", "minMember is 3");
    assert!(
        msg.starts_with(
            "PodGroup default/trainers gets rejected: only 2 of its pods can be placed, minMember is 3; none were bound."
        ),
        "{msg}"
    );
    assert!(msg.contains("Insufficient cpu"), "{msg}");
    for i in 0..3 {
        assert_eq!(
            node_of(&s, &format!("trainer-{i}")),
            None,
            "no member may be bound alone"
        );
    }
    // Capacity arrives: the whole group binds.
    add_node(
        &s,
        "big-node",
        "8",
        &[("topology.kubernetes.io/zone", "zone-9")],
    );
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..3 {
        nodes.insert(wait_bound(&s, &format!("trainer-{i}")));
    }
    assert_eq!(nodes.len(), 3, "{nodes:?}");
}

#[test]
fn gang_waits_for_enough_members() {
    let s = Server::start_with(&["--simulate-nodes", "2"]);
    wait_nodes(&s, 2);
    s.kubectl_ok(&["apply", "-f", PODGROUP_CRD]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/podgroups.scheduling.x-k8s.io",
        "--timeout=20s",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata:\n  name: pair\nspec:\n  minMember: 2\n",
    );
    let member = |name: &str| {
        pod_yaml(
            name,
            &[("scheduling.x-k8s.io/pod-group", "pair")],
            Value::Null,
            Value::Null,
        )
    };
    create(&s, &member("pair-0"));
    let msg = wait_event(&s, "pair-0", "FailedScheduling", "sibling");
    assert_eq!(
        msg,
        "pre-filter pod pair-0 cannot find enough sibling pods, current pods number: 1, minMember of group: 2"
    );
    assert_eq!(node_of(&s, "pair-0"), None);
    create(&s, &member("pair-1"));
    wait_bound(&s, "pair-0");
    wait_bound(&s, "pair-1");
}

#[test]
fn retried_when_a_node_is_added() {
    let s = Server::start();
    create(&s, &pod_yaml("early", &[], cpu("2"), Value::Null));
    let msg = wait_event(&s, "early", "FailedScheduling", "no nodes");
    assert_eq!(msg, "no nodes available to schedule pods");
    // A node whose Ready condition is False counts as tainted not-ready.
    add_node_with(&s, "sick", "4", &[], false, false);
    let msg = wait_event(&s, "early", "FailedScheduling", "0/1");
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. \
         preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    add_node(&s, "small", "1", &[]);
    let msg = wait_event(&s, "early", "FailedScheduling", "0/2");
    assert!(
        msg.starts_with(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        ),
        "{msg}"
    );
    assert_eq!(node_of(&s, "early"), None);
    // Cordoned nodes are skipped too.
    add_node_with(&s, "roomy", "4", &[], true, true);
    let msg = wait_event(&s, "early", "FailedScheduling", "0/3");
    assert!(
        msg.starts_with(
            "0/3 nodes are available: 1 Insufficient cpu, \
             1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."
        ),
        "{msg}"
    );
    s.kubectl_ok(&["uncordon", "roomy"]);
    assert_eq!(wait_bound(&s, "early"), "roomy");
}

#[test]
fn scores_prefer_images_affinity_and_untainted_nodes() {
    let s = Server::start_with(&["--simulate-nodes", "3"]);
    wait_nodes(&s, 3);
    // Image locality: only sim-node-1 has the (large) image.
    let images = serde_json::json!({"status": {"images": [
        {"names": ["registry.local/big@sha256:0123", "registry.local/big:1"], "sizeBytes": 900 * 1024 * 1024}]}});
    s.kubectl_ok(&[
        "patch",
        "node",
        "sim-node-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &images.to_string(),
    ]);
    for i in 0..3 {
        let name = format!("wants-image-{i}");
        create(
            &s,
            &pod_yaml(
                &name,
                &[],
                serde_json::json!({"image": "registry.local/big:1"}),
                Value::Null,
            ),
        );
        assert_eq!(wait_bound(&s, &name), "sim-node-1");
    }

    // Preferred node affinity.
    for i in 0..2 {
        let name = format!("likes-zone-2-{i}");
        create(
            &s,
            &pod_yaml(
                &name,
                &[],
                Value::Null,
                serde_json::json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "preference": {"matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-2"]}]}}]}}}),
            ),
        );
        assert_eq!(wait_bound(&s, &name), "sim-node-2");
    }

    // Preferred pod affinity: next to the cache pod, on the busiest node.
    create(
        &s,
        &pod_yaml(
            "cache",
            &[("app", "cache")],
            Value::Null,
            serde_json::json!({"nodeName": "sim-node-1"}),
        ),
    );
    wait_bound(&s, "cache");
    create(
        &s,
        &pod_yaml(
            "near-cache",
            &[],
            Value::Null,
            serde_json::json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app": "cache"}},
                    "topologyKey": "kubernetes.io/hostname"}}]}}}),
        ),
    );
    assert_eq!(wait_bound(&s, "near-cache"), "sim-node-1");

    // PreferNoSchedule only scores: the untainted node wins (over the
    // emptier sim-node-0), and a pod
    // still lands on a tainted node when nothing else is left.
    s.kubectl_ok(&["taint", "node", "sim-node-0", "soft=yes:PreferNoSchedule"]);
    s.kubectl_ok(&["taint", "node", "sim-node-1", "soft=yes:PreferNoSchedule"]);
    create(&s, &pod_yaml("avoids-taint", &[], Value::Null, Value::Null));
    assert_eq!(wait_bound(&s, "avoids-taint"), "sim-node-2");
    s.kubectl_ok(&["taint", "node", "sim-node-2", "hard=yes:NoSchedule"]);
    create(
        &s,
        &pod_yaml("tolerates-soft", &[], Value::Null, Value::Null),
    );
    let n = wait_bound(&s, "tolerates-soft");
    assert!(n == "sim-node-0" || n == "sim-node-1", "{n}");
}

#[test]
fn extended_resources_and_init_containers() {
    let s = Server::start_with(&["--simulate-nodes", "1"]);
    wait_nodes(&s, 1);
    add_node(&s, "gpu-node", "8", &[]);
    let res =
        serde_json::json!({"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"});
    s.kubectl_ok(&[
        "patch",
        "node",
        "gpu-node",
        "--subresource=status",
        "--type=merge",
        "-p",
        &serde_json::json!({"status": {"capacity": res, "allocatable": res}}).to_string(),
    ]);
    let gpu = |n: &str| serde_json::json!({"resources": {"limits": {"nvidia.com/gpu": n}}});
    create(&s, &pod_yaml("gpu-1", &[], gpu("1"), Value::Null));
    assert_eq!(wait_bound(&s, "gpu-1"), "gpu-node");
    create(&s, &pod_yaml("gpu-2", &[], gpu("2"), Value::Null));
    let msg = wait_event(&s, "gpu-2", "FailedScheduling", "0/2");
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. \
         preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
         1 Preemption is not helpful for scheduling."
    );

    // Init containers run one at a time before the app containers: the pod
    // needs max(6, 3) cpu, not 9.
    let init = serde_json::json!({"initContainers": [{"name": "init", "image": "registry.local/app:1",
        "resources": {"requests": {"cpu": "6"}}}]});
    create(&s, &pod_yaml("with-init", &[], cpu("3"), init));
    wait_bound(&s, "with-init");
    // Two app containers add up: 5 + 4 cpu fits no 8-cpu node.
    let two = serde_json::json!({"containers": [
        {"name": "a", "image": "registry.local/app:1", "resources": {"requests": {"cpu": "5"}}},
        {"name": "b", "image": "registry.local/app:1", "resources": {"requests": {"cpu": "4"}}}]});
    create(&s, &pod_yaml("too-wide", &[], Value::Null, two));
    let msg = wait_event(&s, "too-wide", "FailedScheduling", "0/2");
    assert!(
        msg.starts_with("0/2 nodes are available: 2 Insufficient cpu."),
        "{msg}"
    );
}
