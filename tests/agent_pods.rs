//! Kubelet features end to end with kubectl against `skiff server` and its
//! embedded agent: hostPort and hostNetwork, graceful termination,
//! securityContext, PVCs, image pulls from a real local registry (auth,
//! mirrors, back-off) and pod-level cgroup limits. Same harness as
//! agent_e2e.rs (root, busybox-static, `/usr/bin/docker-registry`).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, pick_free_port};
use serde_json::Value;

/// Polls the pod until `pred` holds; panics with the pod and the log tail.
fn wait_pod(s: &Server, name: &str, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: timed out waiting for {what}: {:#}\n--- log ---\n{}",
                    v["status"],
                    s.log_tail(60)
                );
            }
        } else if Instant::now() > deadline {
            panic!("pod {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn container_status<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn waiting_reason(v: &Value, name: &str) -> String {
    container_status(v, name)["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A plain HTTP/1.0 GET; None if nothing accepts the connection.
fn try_http_get(ip: &str, port: u16, path: &str) -> Option<String> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// GETs until the page answers 200 (the pod may still be starting httpd).
fn http_get_eventually(ip: &str, port: u16, path: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(body) = try_http_get(ip, port, path)
            && body.contains("200 OK")
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{ip}:{port}{path} never answered 200"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nft_table() -> String {
    let out = Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", "skiff-nat"])
        .output()
        .expect("running nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_lease(s: &Server, uid: &str) -> bool {
    std::fs::read_dir(s.dir.path().join("agent/net/ipam"))
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains(uid)
            })
        })
        .unwrap_or(false)
}

fn exec_sh(s: &Server, pod: &str, cmd: &str) -> std::process::Output {
    s.kubectl(&["exec", pod, "--", "sh", "-c", cmd])
}

fn exec_ok(s: &Server, pod: &str, cmd: &str) -> String {
    s.kubectl_ok(&["exec", pod, "--", "sh", "-c", cmd])
}

fn events_for(s: &Server, pod: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
}

// ------------------------------------------------------------ 1. hostPort

#[test]
fn host_port_reaches_the_pod_and_goes_with_it() {
    let s = Server::start_agent(&[]);
    let host_port = pick_free_port();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hp}}
spec:
  containers:
  - name: web
    image: busybox:test
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{{containerPort: 8080, hostPort: {host_port}}}]
"#
        ),
    );
    let pod = wait_pod(&s, "hp", 60, "Ready", ready);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.42."), "{ip}");
    let table = nft_table();
    assert!(
        table.contains(&format!("dport {host_port} dnat to {ip}:8080")),
        "{table}"
    );
    // The node's own loopback address reaches the pod through the DNAT.
    let body = http_get_eventually("127.0.0.1", host_port, "/index.html", 20);
    assert!(body.contains("hello from skiff"), "{body}");

    s.kubectl_ok(&["delete", "pod", "hp", "--wait=true", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nft_table().contains(&format!("dport {host_port} ")) {
        assert!(
            Instant::now() < deadline,
            "DNAT left behind:\n{}",
            nft_table()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(try_http_get("127.0.0.1", host_port, "/").is_none());
}

// --------------------------------------------------------- 2. hostNetwork

#[test]
fn host_network_pod_uses_the_node_network() {
    let s = Server::start_agent(&[]);
    let port = pick_free_port();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hostnet}}
spec:
  hostNetwork: true
  containers:
  - name: web
    image: busybox:test
    command: ["httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]
"#
        ),
    );
    let pod = wait_pod(&s, "hostnet", 60, "Ready", ready);
    assert_eq!(pod["status"]["podIP"], "127.0.0.1");
    assert_eq!(pod["status"]["podIPs"][0]["ip"], "127.0.0.1");
    let body = http_get_eventually("127.0.0.1", port, "/index.html", 20);
    assert!(body.contains("hello from skiff"), "{body}");
    // No sandbox of its own: no veth, no address lease, the host's interfaces.
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(!has_lease(&s, &uid));
    assert!(!links().contains(&skiff_veth(&uid)), "{}", links());
    let ifaces = exec_ok(&s, "hostnet", "ls /sys/class/net");
    assert!(ifaces.contains("skiff0"), "{ifaces}");
    s.kubectl_ok(&["delete", "pod", "hostnet", "--wait=true", "--timeout=60s"]);
    assert!(try_http_get("127.0.0.1", port, "/").is_none());
}

/// The host-side veth name of a pod (`veth` + sha256(uid)[..8]).
fn skiff_veth(uid: &str) -> String {
    use sha2::Digest;
    format!(
        "veth{}",
        &hex::encode(sha2::Sha256::digest(uid.as_bytes()))[..8]
    )
}

// ------------------------------------------------- 3. graceful termination

#[test]
fn deletion_runs_pre_stop_sends_sigterm_and_kills_after_the_grace_period() {
    let s = Server::start_agent(&[]);
    let hostdir = s.dir.path().join("graceful");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: graceful}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: host, hostPath: {{path: {dir}, type: DirectoryOrCreate}}}}]
  containers:
  - name: trap
    image: busybox:test
    command: ["sh", "-c", "trap 'echo term > /host/trap; exit 0' TERM; touch /host/trap-ready; while true; do sleep 0.2; done"]
    lifecycle: {{preStop: {{exec: {{command: ["sh", "-c", "echo hook > /host/prestop"]}}}}}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  - name: stubborn
    image: busybox:test
    command: ["sh", "-c", "trap '' TERM; touch /host/stubborn-ready; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: host, mountPath: /host}}]
"#,
            dir = hostdir.display()
        ),
    );
    wait_pod(&s, "graceful", 60, "Ready", ready);
    // Both traps are installed before the files appear.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(hostdir.join("trap-ready").exists() && hostdir.join("stubborn-ready").exists()) {
        assert!(Instant::now() < deadline, "containers did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    s.kubectl_ok(&["delete", "pod", "graceful", "--wait=true", "--timeout=60s"]);
    let took = started.elapsed();
    assert_eq!(
        std::fs::read_to_string(hostdir.join("prestop")).unwrap(),
        "hook\n"
    );
    assert_eq!(
        std::fs::read_to_string(hostdir.join("trap")).unwrap(),
        "term\n"
    );
    // The one ignoring SIGTERM holds the pod for the whole grace period, then dies.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(7),
        "deletion took {took:?}"
    );
}

// ----------------------------------------------------- 4. securityContext

const SECURITY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ids}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    securityContext: {runAsNonRoot: true}
---
apiVersion: v1
kind: Pod
metadata: {name: readonly}
spec:
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    securityContext: {readOnlyRootFilesystem: true}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
---
apiVersion: v1
kind: Pod
metadata: {name: caps}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [CHOWN], add: [NET_ADMIN]}
---
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    securityContext: {privileged: true}
---
apiVersion: v1
kind: Pod
metadata: {name: sysctls}
spec:
  securityContext:
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
"#;

/// Bit `n` of a capability mask line (`CapEff:`) of /proc/self/status.
fn cap_bit(status: &str, line: &str, n: u32) -> bool {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no {line} in {status}"));
    v & (1 << n) != 0
}

#[test]
fn security_context_is_enforced() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], SECURITY);
    for p in ["ids", "readonly", "caps", "privileged", "sysctls"] {
        wait_pod(&s, p, 60, "Ready", ready);
    }

    // runAsUser / runAsGroup / fsGroup / supplementalGroups.
    let id = exec_ok(&s, "ids", "id");
    assert!(id.starts_with("uid=1000 gid=3000"), "{id}");
    assert!(id.contains("2000") && id.contains("4000"), "{id}");
    // The emptyDir belongs to the fsGroup (setgid), so the user can write there.
    let ls = exec_ok(
        &s,
        "ids",
        "touch /scratch/f && stat -c '%g %A' /scratch /scratch/f",
    );
    assert_eq!(ls, "2000 drwxrwsrwx\n2000 -rw-r--r--\n");

    // runAsNonRoot with an image running as root.
    let pod = wait_pod(&s, "nonroot", 60, "CreateContainerConfigError", |v| {
        waiting_reason(v, "c") == "CreateContainerConfigError"
    });
    let msg = container_status(&pod, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        msg,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)"
        )
    );

    // readOnlyRootFilesystem: / refuses writes, the emptyDir takes them.
    let out = exec_sh(&s, "readonly", "touch /x");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exec_ok(&s, "readonly", "echo ok > /scratch/f && cat /scratch/f");

    // Capabilities: CHOWN dropped, NET_ADMIN added; no privilege escalation.
    let status = exec_ok(&s, "caps", "cat /proc/self/status");
    assert!(!cap_bit(&status, "CapEff:", 0), "CAP_CHOWN kept:\n{status}");
    assert!(
        cap_bit(&status, "CapEff:", 12),
        "no CAP_NET_ADMIN:\n{status}"
    );
    assert!(cap_bit(&status, "CapBnd:", 1), "CAP_DAC_OVERRIDE lost");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let out = exec_sh(&s, "caps", "touch /tmp/f && chown 65534 /tmp/f");
    assert!(!out.status.success(), "chown worked without CAP_CHOWN");
    exec_ok(&s, "caps", "ip link set lo mtu 1500");
    // The default set: CAP_CHOWN, no CAP_NET_ADMIN, escalation allowed.
    let status = exec_ok(&s, "sysctls", "cat /proc/self/status");
    assert!(cap_bit(&status, "CapEff:", 0));
    assert!(!cap_bit(&status, "CapEff:", 12));
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");

    // privileged: every capability, the host's devices, mounts allowed.
    let status = exec_ok(&s, "privileged", "cat /proc/self/status");
    assert!(cap_bit(&status, "CapEff:", 21), "no CAP_SYS_ADMIN");
    let host_dev: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .filter(|e| {
            use std::os::unix::fs::FileTypeExt;
            e.file_type()
                .is_ok_and(|t| t.is_block_device() || t.is_char_device())
        })
        // The runtime sets these up itself.
        .filter(|e| e.file_name() != "console" && e.file_name() != "ptmx")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pod_dev = exec_ok(&s, "privileged", "ls /dev");
    let missing: Vec<&String> = host_dev
        .iter()
        .filter(|d| !pod_dev.lines().any(|l| l == d.as_str()))
        .collect();
    assert!(missing.is_empty(), "host devices missing: {missing:?}");
    exec_ok(
        &s,
        "privileged",
        "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount /mnt/t",
    );
    let out = exec_sh(&s, "caps", "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t");
    assert!(!out.status.success(), "mount allowed unprivileged");

    // Pod sysctls apply in the pod's network namespace only.
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_eq!(
        exec_ok(
            &s,
            "sysctls",
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        ),
        "80\n"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host
    );
}

// ------------------------------------------------ 5. persistentVolumeClaim

#[test]
fn pvc_on_a_host_path_pv_keeps_data_across_pods() {
    let s = Server::start_agent(&[]);
    let pvdir = s.dir.path().join("pv-data");
    // No binder runs in skiff: the claim names its volume and the volume
    // its claim, as a pre-bound pair.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv1}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {{path: {dir}}}
  claimRef: {{namespace: default, name: data}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: pv1
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  restartPolicy: Never
  volumes: [{{name: d, persistentVolumeClaim: {{claimName: data}}}}]
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "echo persisted > /data/file"]
    volumeMounts: [{{name: d, mountPath: /data}}]
"#,
            dir = pvdir.display()
        ),
    );
    wait_pod(&s, "writer", 60, "Succeeded", |v| {
        v["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        std::fs::read_to_string(pvdir.join("file")).unwrap(),
        "persisted\n"
    );
    s.kubectl_ok(&["delete", "pod", "writer", "--wait=true", "--timeout=60s"]);
    // The data outlives the pod.
    assert!(pvdir.join("file").exists());
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  volumes: [{name: d, persistentVolumeClaim: {claimName: data, readOnly: true}}]
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "cat /data/file; touch /data/x 2>/dev/null || echo --ro--"]
    volumeMounts: [{name: d, mountPath: /data}]
"#,
    );
    wait_pod(&s, "reader", 60, "Succeeded", |v| {
        v["status"]["phase"] == "Succeeded"
    });
    assert_eq!(s.kubectl_ok(&["logs", "reader"]), "persisted\n--ro--\n");

    // A claim that names no volume: the pod waits with FailedMount.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: unbound}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: waiting}
spec:
  volumes: [{name: d, persistentVolumeClaim: {claimName: unbound}}]
  containers:
  - {name: c, image: busybox:test, command: ["sleep", "3600"], volumeMounts: [{name: d, mountPath: /data}]}
"#,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = events_for(&s, "waiting");
        if ev.contains("FailedMount")
            && ev.contains("persistentvolumeclaim \"unbound\" is not bound")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no FailedMount event:\n{ev}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let pod = wait_pod(&s, "waiting", 5, "ContainerCreating", |v| {
        waiting_reason(v, "c") == "ContainerCreating"
    });
    assert_eq!(pod["status"]["phase"], "Pending");
}
