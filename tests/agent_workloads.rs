//! Workload controllers on a real node (real containers, real readiness):
//! a readiness-gated rolling update that never drops below what
//! maxUnavailable allows, undo and scale; a killed container and a deleted
//! pod are replaced; Jobs complete or stop at backoffLimit; a DaemonSet runs
//! on the node; a StatefulSet keeps its names; cascading delete leaves no
//! pod; `kubectl drain` respects a PodDisruptionBudget.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn json(s: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).unwrap()
}

fn wait(s: &Server, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    s.wait_for(what, secs, || f().then_some(()))
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 3
  selector: {matchLabels: {app: app}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:test
        command: ["sh", "-c", "sleep 1; touch /tmp/ready; echo v1; sleep 3600 & wait"]
        readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}
"#;

fn ready_pods(s: &Server) -> usize {
    json(s, &["get", "pods", "-l", "app=app"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .count()
}

#[test]
fn deployments_roll_out_on_readiness_and_heal() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], APP);
    s.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    assert_eq!(ready_pods(&s), 3);

    // Rolling update gated on readiness: never fewer than 3 ready pods.
    s.kubectl_ok(&["set", "env", "deployment/app", "VERSION=2"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut min_ready = usize::MAX;
    loop {
        min_ready = min_ready.min(ready_pods(&s));
        let d = json(&s, &["get", "deployment", "app"]);
        let st = &d["status"];
        if st["updatedReplicas"] == 3
            && st["availableReplicas"] == 3
            && st["replicas"] == 3
            && d["metadata"]["generation"] == st["observedGeneration"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {st}");
    }
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} during a maxUnavailable=0 rollout"
    );
    let env = s.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=app",
        "-o",
        "jsonpath={.items[*].spec.containers[0].env[0].value}",
    ]);
    assert_eq!(
        env.split_whitespace().filter(|v| *v == "2").count(),
        3,
        "{env}"
    );

    // Undo goes back to revision 1's template; scale to 4.
    s.kubectl_ok(&["rollout", "undo", "deployment/app"]);
    s.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=90s"]);
    let envs = s.kubectl_ok(&[
        "get",
        "deployment",
        "app",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env}",
    ]);
    assert!(envs.is_empty(), "undo kept the env: {envs}");
    s.kubectl_ok(&["scale", "deployment/app", "--replicas=4"]);
    s.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    wait(&s, "4 ready pods", 30, || ready_pods(&s) == 4);

    // A killed container restarts in place; a deleted pod is replaced.
    let pods = json(&s, &["get", "pods", "-l", "app=app"]);
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["exec", &victim, "--", "sh", "-c", "kill $(pidof sleep)"]);
    wait(&s, "the container to restart", 30, || {
        let p = json(&s, &["get", "pod", &victim]);
        p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)
    });
    let other = pods["items"][1]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["delete", "pod", &other, "--wait=false"]);
    wait(&s, "a replacement pod", 60, || {
        let names = s.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=app",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        !names.split_whitespace().any(|n| n == other) && ready_pods(&s) == 4
    });

    // drain respects a PDB that allows no disruption.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: app}\nspec: {minAvailable: 4, selector: {matchLabels: {app: app}}}\n",
    );
    wait(&s, "the PDB to observe its pods", 20, || {
        json(&s, &["get", "pdb", "app"])["status"]["currentHealthy"] == 4
    });
    let out = s.kubectl(&[
        "drain",
        common::NODE,
        "--ignore-daemonsets",
        "--timeout=5s",
        "--pod-selector=app=app",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("disruption budget"), "{err}");
    assert_eq!(ready_pods(&s), 4);
    s.kubectl_ok(&["uncordon", common::NODE]);

    // Cascading delete leaves no pod behind.
    s.kubectl_ok(&["delete", "pdb", "app"]);
    s.kubectl_ok(&[
        "delete",
        "deployment",
        "app",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait(&s, "no pods", 60, || {
        json(&s, &["get", "pods", "-l", "app=app"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[test]
fn jobs_daemonsets_and_statefulsets_on_a_real_node() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:test, command: [sh, -c, "echo done"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:test, command: [sh, -c, "exit 2"]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds}
spec:
  selector: {matchLabels: {app: ds}}
  template:
    metadata: {labels: {app: ds}}
    spec:
      containers: [{name: c, image: busybox:test, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox:test, command: [sh, -c, "hostname > /tmp/me; sleep 3600"]}]
"#,
    );
    s.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "--timeout=60s",
    ]);
    assert_eq!(json(&s, &["get", "job", "ok"])["status"]["succeeded"], 2);
    let logs = s.kubectl_ok(&["logs", "job/ok"]);
    assert_eq!(logs, "done\n");
    s.kubectl_ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=90s"]);
    let bad = json(&s, &["get", "job", "bad"]);
    let failed = bad["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(bad["status"]["failed"], 2);

    s.kubectl_ok(&["rollout", "status", "daemonset/ds", "--timeout=60s"]);
    let ds = json(&s, &["get", "pods", "-l", "app=ds"]);
    assert_eq!(ds["items"].as_array().unwrap().len(), 1);
    assert_eq!(ds["items"][0]["spec"]["nodeName"], common::NODE);

    s.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=90s"]);
    assert_eq!(
        s.kubectl_ok(&["exec", "web-0", "--", "cat", "/tmp/me"]),
        "web-0\n"
    );
    let uid = json(&s, &["get", "pod", "web-0"])["metadata"]["uid"].clone();
    s.kubectl_ok(&["delete", "pod", "web-0"]);
    wait(&s, "web-0 back", 60, || {
        let out = s.kubectl(&["get", "pod", "web-0", "-o", "json"]);
        out.status.success() && {
            let p: Value = serde_json::from_slice(&out.stdout).unwrap();
            p["metadata"]["uid"] != uid
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        }
    });
    assert_eq!(
        s.kubectl_ok(&["exec", "web-0", "--", "hostname"]),
        "web-0\n"
    );
}
