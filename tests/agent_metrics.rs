//! Resource metrics end to end on a real node: the agent's `/stats/summary`
//! through `metrics.k8s.io` to `kubectl top`, and the HPA controller
//! scaling a CPU-burning Deployment up and back down.

mod common;

use std::time::Instant;

use common::Server;
use serde_json::Value;

/// Controller settings short enough for a test (upstream: 15 s and 5 min).
const FAST_HPA: &[&str] = &[
    "--kube-controller-manager-arg",
    "horizontal-pod-autoscaler-sync-period=1s",
    "--kube-controller-manager-arg",
    "horizontal-pod-autoscaler-downscale-stabilization=10s",
];

fn wait_for<T>(what: &str, secs: u64, s: &Server, f: impl FnMut() -> Option<T>) -> T {
    s.wait_for(what, secs, f)
}

fn pod_running(s: &Server, name: &str) -> bool {
    let out = s.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&out.stdout) == "Running"
}

/// `250m` → 250, `1` → 1000 (kubectl top's CPU column).
fn millicores(q: &str) -> f64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<f64>().unwrap() * 1000.0,
    }
}

/// A quantity in bytes (`51200Ki`, `50Mi`, `123456`).
fn bytes(q: &str) -> f64 {
    for (suffix, mul) in [("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * mul;
        }
    }
    q.parse().unwrap()
}

/// `kubectl top pod` rows: name → (millicores, MiB).
fn top_pods(s: &Server, extra: &[&str]) -> Option<Vec<(String, f64, f64)>> {
    let mut args = vec!["top", "pod", "--no-headers"];
    args.extend_from_slice(extra);
    let out = s.kubectl(&args);
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = f.len();
                (n >= 3).then(|| {
                    (
                        f[..n - 2].join(" "),
                        millicores(f[n - 2]),
                        f[n - 1].trim_end_matches("Mi").parse().unwrap_or(-1.0),
                    )
                })
            })
            .collect(),
    )
}

/// Working set of the pod's only container, from the host's cgroup files
/// (usage − inactive_file, v1 or v2).
fn cgroup_working_set(uid: &str) -> u64 {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let kv = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
            })
            .unwrap_or(0)
    };
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let base = if v2 {
        "/sys/fs/cgroup".to_string()
    } else {
        "/sys/fs/cgroup/memory".to_string()
    };
    for qos in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
        let pod = std::path::PathBuf::from(format!("{base}/{qos}/pod{uid}"));
        let Ok(rd) = std::fs::read_dir(&pod) else {
            continue;
        };
        let ctr = rd
            .flatten()
            .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .expect("container cgroup")
            .path();
        return if v2 {
            let usage: u64 = read(&ctr.join("memory.current")).trim().parse().unwrap();
            usage - kv(&read(&ctr.join("memory.stat")), "inactive_file")
        } else {
            let usage: u64 = read(&ctr.join("memory.usage_in_bytes"))
                .trim()
                .parse()
                .unwrap();
            usage - kv(&read(&ctr.join("memory.stat")), "total_inactive_file")
        };
    }
    panic!("no cgroup for pod {uid}");
}

/// GET on the agent's kubelet port with the admin's client certificate
/// (the agent admits `system:masters`), through curl.
fn agent_get(s: &Server, path: &str) -> String {
    use base64::Engine;
    let kc = std::fs::read_to_string(&s.kubeconfig).unwrap();
    let field = |k: &str| {
        let b64 = kc.lines().find_map(|l| l.trim().strip_prefix(k)).unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap()
    };
    let (cert, key) = (
        s.dir.path().join("admin.crt"),
        s.dir.path().join("admin.key"),
    );
    std::fs::write(&cert, field("client-certificate-data:")).unwrap();
    std::fs::write(&key, field("client-key-data:")).unwrap();
    let port = s.kubectl_ok(&[
        "get",
        "node",
        common::NODE,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let out = std::process::Command::new("curl")
        .args(["-sSfk", "--noproxy", "*", "--max-time", "10", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: burner, labels: {app: burner}}
spec:
  containers:
  - name: burn
    image: busybox:test
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "while :; do :; done"]
    resources: {requests: {cpu: 100m}}
---
apiVersion: v1
kind: Pod
metadata: {name: idle, labels: {app: idle}}
spec:
  containers:
  - name: sleep
    image: busybox:test
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: hog, labels: {app: hog}}
spec:
  containers:
  - name: hold
    image: busybox:test
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "head -c 52428800 /dev/zero > /mem/blob && sleep 3600"]
    volumeMounts: [{name: mem, mountPath: /mem}]
  volumes:
  - name: mem
    emptyDir: {medium: Memory}
"#;

#[test]
fn kubectl_top_nodes_and_pods() {
    let s = Server::start_agent(&[]);
    // Discovery lists the group the way kubectl top looks for it.
    let resources = s.kubectl_ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    assert!(resources.contains("NodeMetrics"), "{resources}");
    assert!(resources.contains("PodMetrics"), "{resources}");

    s.kubectl_stdin_ok(&["apply", "-f", "-"], PODS);
    for p in ["burner", "idle", "hog"] {
        wait_for(&format!("pod {p} running"), 60, &s, || {
            pod_running(&s, p).then_some(())
        });
    }

    let out = wait_for("kubectl top nodes", 60, &s, || {
        let o = s.kubectl(&["top", "nodes", "--no-headers"]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    eprintln!("kubectl top nodes:\n{out}");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], common::NODE, "{out}");
    // NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%
    assert!(millicores(f[1]) > 0.0, "{out}");
    assert!(f[3].ends_with("Mi") && bytes(f[3]) > 0.0, "{out}");

    // Every pod measured, the burner well above the idle one (rates settle
    // over the agent's sampling window).
    let rows = wait_for("kubectl top pods with a busy burner", 90, &s, || {
        let rows = top_pods(&s, &[])?;
        let get = |n: &str| rows.iter().find(|r| r.0 == n).cloned();
        let (b, i, h) = (get("burner")?, get("idle")?, get("hog")?);
        (b.1 >= 300.0 && h.2 >= 45.0).then_some(vec![b, i, h])
    });
    eprintln!("kubectl top pods: {rows:?}");
    let (burner, idle) = (&rows[0], &rows[1]);
    assert!(
        burner.1 > 5.0 * idle.1.max(1.0),
        "burner {burner:?} vs idle {idle:?}"
    );
    assert!(idle.1 < 50.0, "idle pod uses {idle:?}");

    // The 50 MiB held in tmpfs, as its cgroup sees it.
    let uid = s.kubectl_ok(&["get", "pod", "hog", "-o", "jsonpath={.metadata.uid}"]);
    let raw = s.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/hog",
    ]);
    let m: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(m["kind"], "PodMetrics");
    assert!(m["window"].as_str().unwrap().ends_with('s'), "{m}");
    assert!(m["timestamp"].as_str().is_some(), "{m}");
    let reported = bytes(m["containers"][0]["usage"]["memory"].as_str().unwrap());
    let cgroup = cgroup_working_set(&uid) as f64;
    eprintln!(
        "hog: metrics {:.1} MiB, cgroup {:.1} MiB",
        reported / 1048576.0,
        cgroup / 1048576.0
    );
    assert!(
        (reported - cgroup).abs() <= 0.2 * cgroup,
        "metrics {reported} vs cgroup {cgroup}"
    );
    assert!(
        (reported - 52428800.0).abs() <= 0.2 * 52428800.0,
        "metrics {reported} vs 50Mi"
    );

    // All namespaces, containers, selectors, and a missing pod.
    let all = s.kubectl_ok(&["top", "pod", "-A", "--no-headers"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("default") && l.contains("burner")),
        "{all}"
    );
    let containers = s.kubectl_ok(&["top", "pod", "hog", "--containers", "--no-headers"]);
    assert!(
        containers.contains("hog") && containers.contains("hold"),
        "{containers}"
    );
    let selected = top_pods(&s, &["-l", "app=idle"]).unwrap();
    assert_eq!(selected.len(), 1, "{selected:?}");
    assert_eq!(selected[0].0, "idle");
    let missing = s.kubectl(&["top", "pod", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("podmetrics.metrics.k8s.io \"default/nope\" not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    // kubectl get prints metrics-server's table.
    let table = s.kubectl_ok(&["get", "pods.metrics.k8s.io", "burner"]);
    assert!(table.contains("WINDOW"), "{table}");
    // The agent's own endpoints: the Summary API and the Prometheus form
    // metrics-server scrapes.
    let summary: Value = serde_json::from_str(&agent_get(&s, "/stats/summary")).unwrap();
    assert_eq!(summary["node"]["nodeName"], common::NODE);
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    let hog = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "hog")
        .expect("hog in the summary");
    assert_eq!(hog["containers"][0]["name"], "hold");
    let text = agent_get(&s, "/metrics/resource");
    assert!(
        text.lines().any(|l| l.starts_with(
            "container_cpu_usage_seconds_total{container=\"burn\",namespace=\"default\",pod=\"burner\"}"
        )),
        "{text}"
    );
    assert!(text.contains("\nnode_memory_working_set_bytes "), "{text}");

    // Node metrics carry the node's name (and labels).
    let nodes = s.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
    let nodes: Value = serde_json::from_str(&nodes).unwrap();
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["items"][0]["metadata"]["name"], common::NODE);
}

fn deployment(dir: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burner}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burner}}}}
  template:
    metadata: {{labels: {{app: burner}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: busybox:test
        imagePullPolicy: IfNotPresent
        # Burns while the host file exists, then idles.
        command: ["sh", "-c", "while [ -e /ctl/burn ]; do :; done; exec sleep 3600"]
        resources: {{requests: {{cpu: 100m}}}}
        volumeMounts: [{{name: ctl, mountPath: /ctl}}]
      volumes:
      - name: ctl
        hostPath: {{path: {}, type: DirectoryOrCreate}}
"#,
        dir.display()
    )
}

fn spec_replicas(s: &Server) -> i64 {
    s.kubectl_ok(&["get", "deploy", "burner", "-o", "jsonpath={.spec.replicas}"])
        .trim()
        .parse()
        .unwrap_or(-1)
}

#[test]
fn hpa_scales_a_cpu_burner_up_and_down() {
    let s = Server::start_agent(FAST_HPA);
    let ctl = s.dir.path().join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    std::fs::write(ctl.join("burn"), "").unwrap();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &deployment(&ctl));
    s.kubectl_ok(&[
        "autoscale",
        "deployment",
        "burner",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);

    let t0 = Instant::now();
    wait_for("scale-up to 3", 120, &s, || {
        (spec_replicas(&s) == 3).then_some(())
    });
    eprintln!("scaled up to 3 after {:?}", t0.elapsed());
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );
    let hpa: Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "hpa.v2.autoscaling", "burner", "-o", "json"]))
            .unwrap();
    let st = &hpa["status"];
    assert!(st["lastScaleTime"].is_string(), "{st:#}");
    assert_eq!(st["currentMetrics"][0]["type"], "Resource", "{st:#}");
    assert!(
        st["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
            .as_i64()
            .unwrap()
            > 50,
        "{st:#}"
    );
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(cond("AbleToScale")["status"], "True", "{st:#}");
    assert_eq!(cond("ScalingActive")["status"], "True", "{st:#}");
    assert_eq!(
        cond("ScalingActive")["reason"],
        "ValidMetricFound",
        "{st:#}"
    );
    eprintln!(
        "kubectl get hpa:\n{}",
        s.kubectl_ok(&["get", "hpa", "burner"])
    );

    // Stop burning: back to the minimum after the (10 s) stabilisation.
    std::fs::remove_file(ctl.join("burn")).unwrap();
    let t1 = Instant::now();
    wait_for("scale-down to 1", 120, &s, || {
        (spec_replicas(&s) == 1).then_some(())
    });
    eprintln!("scaled down to 1 after {:?}", t1.elapsed());
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
    let described = s.kubectl_ok(&["describe", "hpa", "burner"]);
    eprintln!("{described}");
    assert!(described.contains("SuccessfulRescale"), "{described}");
}
