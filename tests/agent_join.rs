//! A standalone `skiff agent` joining a control-plane-only `skiff server`
//! (with the join token, with bad tokens, with a kubeconfig), the Node and
//! Lease it keeps, and `skiff killall` leaving the machine clean. Real
//! containers: run as root, one agent at a time (they share the bridge and
//! the nftables table), the busybox image imported air-gapped.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Server, agent_command, condition, join_token, kill_and_wait};
use serde_json::Value;

/// Waits for `child` to exit (killing it after `secs`); its status.
fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            kill_and_wait(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&all)).unwrap()
}

/// Polls the pod until `pred` holds; panics with the pod and both logs.
fn wait_pod(s: &Server, a: &Agent, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() && pred(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "pod {name}: timed out waiting for {what}: {:#}\n--- agent log ---\n{}\n--- server log ---\n{}",
                v["status"],
                a.log(),
                s.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod_ready(v: &Value) -> bool {
    condition(v, "Ready")["status"] == "True"
}

fn parse_time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .with_timezone(&chrono::Utc)
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

fn veth_links() -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with("veth"))
        .collect()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn nft_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// PIDs whose command line contains every one of `words`.
fn processes_with(words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pid != std::process::id() && words.iter().all(|w| cmd.contains(w)) {
            found.push(pid);
        }
    }
    found
}

/// `kubepods` cgroups in any hierarchy (v1 controllers or v2).
fn kubepods_cgroups() -> Vec<String> {
    let mut found = Vec::new();
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    for r in roots {
        let p = r.join("kubepods");
        if p.is_dir() {
            found.push(p.display().to_string());
        }
    }
    found
}

const JOINED_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: joined}
spec:
  tolerations: [{key: dedicated, operator: Equal, value: x, effect: NoSchedule}]
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "echo hello from joined-node; sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: untolerated}
spec:
  containers: [{name: c, image: busybox:test, command: ["sleep", "3600"]}]
"#;

#[test]
fn agent_joins_with_the_token_and_keeps_its_node() {
    let _lock = common::agent_test_lock();
    let s = Server::start_with(&[]);
    let token = join_token(&s);
    let url = s.url();
    let mut a = Agent::spawn(
        "joined-node",
        &["--server", &url, "--token", &token],
        &[
            "--node-label",
            "team=a",
            "--node-taint",
            "dedicated=x:NoSchedule",
        ],
    );
    let node = a.wait_ready(&s);

    // Status as the kubelet reports it.
    let st = &node["status"];
    for k in ["cpu", "memory", "ephemeral-storage"] {
        assert!(
            st["capacity"][k].as_str().is_some_and(|v| !v.is_empty()),
            "capacity {k}: {}",
            st["capacity"]
        );
        assert!(st["allocatable"][k].is_string(), "{}", st["allocatable"]);
    }
    assert_eq!(st["capacity"]["pods"], "110");
    let info = &st["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("skiff://"),
        "{info}"
    );
    assert_eq!(info["operatingSystem"], "linux");
    assert!(info["kubeletVersion"].as_str().unwrap().starts_with("v1."));
    assert!(!info["kernelVersion"].as_str().unwrap().is_empty());
    let addresses = st["addresses"].to_string();
    assert!(
        addresses.contains(r#"{"address":"127.0.0.1","type":"InternalIP"}"#)
            && addresses.contains(r#"{"address":"joined-node","type":"Hostname"}"#),
        "{addresses}"
    );
    assert_eq!(
        st["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        a.kubelet_port
    );
    let ready = condition(&node, "Ready");
    assert_eq!(ready["reason"], "KubeletReady", "{ready}");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    for (type_, ok, bad) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "KubeletHasInsufficientMemory",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "KubeletHasDiskPressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "KubeletHasInsufficientPID",
        ),
    ] {
        let c = condition(&node, type_);
        // A full disk on the test machine may rightly report pressure.
        let want = if c["status"] == "True" { bad } else { ok };
        assert_eq!(c["reason"], want, "{c}");
        assert!(c["lastTransitionTime"].is_string(), "{c}");
        assert!(c["lastHeartbeatTime"].is_string(), "{c}");
    }
    // The imported image is listed.
    let images = st["images"].as_array().expect("status.images");
    assert!(
        images.iter().any(|i| {
            i["sizeBytes"].as_u64() > Some(0)
                && i["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == "docker.io/library/busybox:test"))
        }),
        "status.images: {images:?}"
    );
    // Labels and taints from the command line.
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "joined-node");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["team"], "a");
    assert!(labels["node-role.kubernetes.io/control-plane"].is_null());
    let taints = node["spec"]["taints"].as_array().expect("taints");
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "dedicated" && t["value"] == "x" && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );

    // The Lease, renewed by this node.
    let lease = get_json(&s, &["lease", "-n", "kube-node-lease", "joined-node"]);
    assert_eq!(lease["spec"]["holderIdentity"], "joined-node");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let renew0 = parse_time(&lease["spec"]["renewTime"]);
    let age = chrono::Utc::now() - renew0;
    assert!(age.num_seconds().abs() < 30, "renewTime {renew0} is stale");
    let started = Instant::now();

    // A pod tolerating the taint is scheduled there and runs; logs and exec
    // go through the API server's relay to this agent.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], JOINED_PODS);
    let pod = wait_pod(&s, &a, "joined", "Ready", pod_ready);
    assert_eq!(pod["spec"]["nodeName"], "joined-node");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.42.")),
        "{}",
        pod["status"]
    );
    assert_eq!(
        s.kubectl_ok(&["logs", "joined"]),
        "hello from joined-node\n"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "exec",
            "joined",
            "--",
            "sh",
            "-c",
            "echo $((6*7)) $(hostname)"
        ]),
        "42 joined\n"
    );
    let out = s.kubectl(&["exec", "joined", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // The other pod does not tolerate the taint: unschedulable.
    let p = wait_pod(&s, &a, "untolerated", "Unschedulable", |v| {
        condition(v, "PodScheduled")["reason"] == "Unschedulable"
    });
    assert!(p["spec"]["nodeName"].is_null(), "{}", p["spec"]);

    // A heartbeat later: the Lease is renewed, the conditions' heartbeat
    // moved, their transition times did not.
    let hb0 = parse_time(&ready["lastHeartbeatTime"]);
    let deadline = started + Duration::from_secs(40);
    let (lease, node2) = loop {
        let lease = get_json(&s, &["lease", "-n", "kube-node-lease", "joined-node"]);
        let node2 = get_json(&s, &["node", "joined-node"]);
        let renewed = parse_time(&lease["spec"]["renewTime"]) > renew0;
        let beat = parse_time(&condition(&node2, "Ready")["lastHeartbeatTime"]) > hb0;
        if renewed && beat {
            break (lease, node2);
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat: lease {} node {}\n--- agent log ---\n{}",
            lease["spec"],
            node2["status"]["conditions"],
            a.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(lease["spec"]["holderIdentity"], "joined-node");
    for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let (before, after) = (condition(&node, type_), condition(&node2, type_));
        if before["status"] == after["status"] {
            assert_eq!(
                before["lastTransitionTime"], after["lastTransitionTime"],
                "{type_}: {before} -> {after}"
            );
        }
    }
    assert_eq!(condition(&node2, "Ready")["status"], "True");
}

/// Runs `skiff agent` expected to fail; its exit status and output.
fn failing_agent(conn: &[&str]) -> (Option<std::process::ExitStatus>, String, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("skiff-agent-")
        .tempdir()
        .unwrap();
    let port = common::pick_free_port();
    let mut child = agent_command(dir.path(), "bad-node", port, conn, &[])
        .spawn()
        .expect("spawning skiff agent");
    let status = wait_exit(&mut child, 30);
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    (status, log, dir)
}

#[test]
fn agent_with_a_bad_token_fails_clearly() {
    // Held in case a broken check lets the agent go on to the pod network.
    let _lock = common::agent_test_lock();
    let s = Server::start_with(&[]);
    let token = join_token(&s);
    let url = s.url();
    let (hash, secret) = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::server:"))
        .expect("token form K10<hash>::server:<secret>");

    // A CA hash that is not this server's: the CA is refused.
    let bad_ca = format!("K10{}::server:{secret}", "0".repeat(64));
    let (status, log, dir) = failing_agent(&["--server", &url, "--token", &bad_ca]);
    let status = status.unwrap_or_else(|| panic!("agent did not exit:\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(log.contains("does not match"), "{log}");
    assert!(!dir.path().join("agent").join("rt").exists(), "{log}");

    // The right CA, a wrong secret: the server answers 401.
    let bad_secret = format!("K10{hash}::server:wrong");
    let (status, log, dir) = failing_agent(&["--server", &url, "--token", &bad_secret]);
    let status = status.unwrap_or_else(|| panic!("agent did not exit:\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("401") && log.contains("token"),
        "unclear error: {log}"
    );
    // Nothing was started on the machine for a node that cannot join: the
    // keeper forked at start (which carries the agent's command line) went
    // with the agent, having created nothing.
    assert!(!dir.path().join("agent").join("rt").exists(), "{log}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&[&dir.path().display().to_string()]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "a process of the refused agent is left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.path().join("agent").join("rt").exists(), "{log}");

    // A bare secret that is wrong is refused the same way.
    let (status, log, _dir) = failing_agent(&["--server", &url, "--token", "wrong"]);
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("401"), "{log}");

    // No server there.
    let closed = format!("https://127.0.0.1:{}", common::pick_free_port());
    let (status, log, _dir) = failing_agent(&["--server", &closed, "--token", &token]);
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains(&closed), "{log}");

    // Neither a token nor a kubeconfig.
    let (status, log, _dir) = failing_agent(&["--server", &url]);
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("--token"), "{log}");
}

#[test]
fn agent_joins_with_a_kubeconfig() {
    let _lock = common::agent_test_lock();
    let s = Server::start_with(&[]);
    let kc = s.kubeconfig.display().to_string();
    let mut a = Agent::spawn("kc-node", &["--kubeconfig", &kc], &[]);
    let node = a.wait_ready(&s);
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("skiff://")
    );
    let lease = get_json(&s, &["lease", "-n", "kube-node-lease", "kc-node"]);
    assert_eq!(lease["spec"]["holderIdentity"], "kc-node");
    // The streaming endpoint trusts the CA from the kubeconfig: logs work.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: kc}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox:test, command: [echo, via-kubeconfig]}]\n",
    );
    wait_pod(&s, &a, "kc", "Succeeded", |v| {
        v["status"]["phase"] == "Succeeded"
    });
    assert_eq!(s.kubectl_ok(&["logs", "kc"]), "via-kubeconfig\n");
}

#[test]
fn killall_leaves_the_machine_clean() {
    let _lock = common::agent_test_lock();
    let s = Server::start_with(&[]);
    let token = join_token(&s);
    let url = s.url();
    let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let veth_before = veth_links();
    let mut a = Agent::spawn("killall-node", &["--server", &url, "--token", &token], &[]);
    a.wait_ready(&s);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: doomed}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "31337"]
    resources: {limits: {memory: 32Mi}}
    volumeMounts: [{name: m, mountPath: /m}]
  volumes: [{name: m, emptyDir: {medium: Memory}}]
"#,
    );
    wait_pod(&s, &a, "doomed", "Ready", pod_ready);

    // What killall must remove is there.
    let data = a.dir.path().to_path_buf();
    let rt = std::fs::canonicalize(data.join("agent").join("rt")).unwrap();
    let keeper: u32 = std::fs::read_to_string(rt.join("keeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The keeper was forked at the agent's start (before its threads), not
    // re-executed: it carries the agent's command line, named skiff-keeper.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap(),
        "skiff-keeper\n"
    );
    let cmdline = std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(" agent ") && !cmdline.contains("__runtime-keeper"),
        "{cmdline}"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{keeper}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Threads:")),
        Some("Threads:\t1")
    );
    let keeper_alive = || std::path::Path::new(&format!("/proc/{keeper}")).exists();
    assert!(!processes_with(&["sleep", "31337"]).is_empty());
    assert!(!mounts_under(&data).is_empty());
    assert!(link_exists("skiff0"));
    assert!(nft_tables().contains("skiff-nat"));
    let new_veths: Vec<String> = veth_links().difference(&veth_before).cloned().collect();
    assert!(!new_veths.is_empty());
    assert!(!kubepods_cgroups().is_empty());
    assert_eq!(
        std::fs::read_to_string(data.join("agent").join("skiff.pid"))
            .unwrap()
            .trim(),
        a.pid().to_string()
    );

    // The agent is left running: killall stops it through its pid file.
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["killall", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.trim(),
        format!("skiff killall: node {} is clean", data.display())
    );

    let status = wait_exit(&mut a.child, 10).expect("the agent is still running");
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let container = processes_with(&["sleep", "31337"]);
        if !keeper_alive() && container.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running: keeper {keeper} {} container {container:?}",
            keeper_alive()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(mounts_under(&data), Vec::<String>::new());
    assert!(!link_exists("skiff0"), "bridge skiff0 left");
    assert!(!nft_tables().contains("skiff-nat"), "{}", nft_tables());
    let left: Vec<String> = veth_links()
        .into_iter()
        .filter(|v| new_veths.contains(v))
        .collect();
    assert!(left.is_empty(), "veth left: {left:?}");
    assert_eq!(kubepods_cgroups(), Vec::<String>::new());
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forward_before,
        "ip_forward not restored"
    );
    assert!(!data.join("agent").join("skiff.pid").exists());

    // A second run finds nothing to do and still succeeds.
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["killall", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    // Nothing of this node runs: no keeper, forked or re-executed.
    while !processes_with(&[&data.display().to_string()]).is_empty() {
        assert!(Instant::now() < deadline, "a runtime keeper is left");
        std::thread::sleep(Duration::from_millis(100));
    }
}
