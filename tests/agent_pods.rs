//! Kubelet features end to end with kubectl against `skiff server` and its
//! embedded agent: hostPort and hostNetwork, graceful termination,
//! securityContext, PVCs, image pulls from a real local registry (auth,
//! mirrors, back-off, a full disk) and pod-level cgroup limits. Same
//! harness as agent_e2e.rs (root, busybox-static, `/usr/bin/docker-registry`,
//! tmpfs mounts).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, container_status, pick_free_port, pod_ready, wait_pod};
use serde_json::Value;

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

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
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
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:test
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{{containerPort: 8080, hostPort: {host_port}}}]
"#
        ),
    );
    let pod = wait_pod(&s, "hp", 60, "Ready", pod_ready);
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
  terminationGracePeriodSeconds: 1
  hostNetwork: true
  containers:
  - name: web
    image: busybox:test
    command: ["httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]
"#
        ),
    );
    let pod = wait_pod(&s, "hostnet", 60, "Ready", pod_ready);
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
    wait_pod(&s, "graceful", 60, "Ready", pod_ready);
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
---
apiVersion: v1
kind: Pod
metadata: {name: seccomp}
spec:
  securityContext:
    runAsUser: 1000
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "unshare -U true || echo init denied; exec sleep 3600"]
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
    for p in [
        "ids",
        "readonly",
        "caps",
        "privileged",
        "sysctls",
        "seccomp",
    ] {
        wait_pod(&s, p, 60, "Ready", pod_ready);
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

    // seccompProfile RuntimeDefault filters the container and what is
    // exec'd into it (a user namespace needs no capability, only the
    // filter stops it); without a profile, nothing is filtered (upstream's
    // default is Unconfined).
    assert!(
        s.kubectl_ok(&["logs", "seccomp"]).contains("init denied"),
        "the container's own process was not filtered"
    );
    let out = exec_sh(&s, "seccomp", "unshare -U true");
    assert!(!out.status.success(), "exec'd process not filtered");
    for (pod, mode) in [("seccomp", "2"), ("sysctls", "0")] {
        for proc in ["1", "self"] {
            let status = exec_ok(&s, pod, &format!("cat /proc/{proc}/status"));
            assert!(
                status.contains(&format!("Seccomp:\t{mode}\n")),
                "{pod} /proc/{proc}: {status}"
            );
        }
    }
    exec_ok(&s, "sysctls", "unshare -U true");

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
    // A pre-bound pair (the claim names its volume and the volume its
    // claim), so the test does not wait on the binder's pass.
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

// ------------------------------------------------------- 6. image pulls

/// A docker-registry process on 127.0.0.1:<free port>, killed (by PID) on
/// drop (as in tests/images.rs).
struct Registry {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// With `htpasswd`, requires basic auth.
    fn start(htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = pick_free_port();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            );
            if let Some(h) = htpasswd {
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                    h.display()
                ));
            }
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting /usr/bin/docker-registry");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if try_http_get("127.0.0.1", port, "/v2/").is_some() {
                    return Registry {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start:\n{log}");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the test busybox image (from `common::busybox_archive`) as
    /// `repo_tag`, with `auth` as basic credentials.
    fn push_busybox(&self, repo_tag: &str, auth: Option<(&str, &str)>) {
        let mut archive = tar::Archive::new(std::io::Cursor::new(common::busybox_archive()));
        let (mut config, mut layer) = (Vec::new(), Vec::new());
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            match name.as_str() {
                "config.json" => e.read_to_end(&mut config).unwrap(),
                "layer.tar" => e.read_to_end(&mut layer).unwrap(),
                _ => 0,
            };
        }
        self.push(repo_tag, &config, &layer, auth);
    }

    /// Pushes a one-layer image (`layer`: an uncompressed tar) as
    /// `repo_tag`.
    fn push(&self, repo_tag: &str, config: &[u8], layer: &[u8], auth: Option<(&str, &str)>) {
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha(layer), "size": layer.len()}],
        }))
        .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = oci_client::Client::new(oci_client::client::ClientConfig {
                protocol: oci_client::client::ClientProtocol::Http,
                ..Default::default()
            });
            let reference: oci_client::Reference =
                format!("{}/{repo_tag}", self.host()).parse().unwrap();
            let creds = match auth {
                Some((u, p)) => oci_client::secrets::RegistryAuth::Basic(u.into(), p.into()),
                None => oci_client::secrets::RegistryAuth::Anonymous,
            };
            client
                .auth(&reference, &creds, oci_client::RegistryOperation::Push)
                .await
                .expect("registry auth");
            for blob in [layer, config] {
                client
                    .push_blob(&reference, blob.to_vec(), &sha(blob))
                    .await
                    .expect("pushing a blob");
            }
            client
                .push_manifest_raw(
                    &reference,
                    manifest,
                    http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
                )
                .await
                .expect("pushing the manifest");
        });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl get pods -w` printing `fields` (jsonpath on the pod's first
/// container status) per update, started before the pod exists so that it
/// sees every state the container goes through.
struct WaitingWatch(Child);

impl WaitingWatch {
    fn start(s: &Server, pod: &str, fields: &str) -> WaitingWatch {
        let fields = fields.replace("{.", "{.status.containerStatuses[0].");
        let child = s
            .kubectl_command_pub(&[
                "get",
                "pods",
                "--field-selector",
                &format!("metadata.name={pod}"),
                "-w",
                "-o",
                &format!("jsonpath={fields}{{\"\\n\"}}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let kubectl list (nothing) and start watching.
        std::thread::sleep(Duration::from_secs(1));
        WaitingWatch(child)
    }

    /// Stops kubectl; what it printed.
    fn finish(self) -> String {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: SIGTERM to the kubectl child we spawned (PID not reaped yet).
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let out = self.0.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn pods_pull_with_pull_secrets_back_off_without_and_use_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    // Cost 4: the registry checks it on every request.
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&htpasswd, format!("tester:{hash}\n")).unwrap();
    let private = Registry::start(Some(&htpasswd));
    private.push_busybox("team/busybox:v1", Some(("tester", "s3cret")));
    let open = Registry::start(None);
    open.push_busybox("library/mirrored:v1", None);
    // Both plain http; docker.io is served by the open registry.
    let registries = dir.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  \"{p}\":\n    endpoint: [\"http://{p}\"]\n  docker.io:\n    endpoint: [\"http://{o}\"]\n",
            p = private.host(),
            o = open.host()
        ),
    )
    .unwrap();
    let s = Server::start_agent(&["--private-registry", registries.to_str().unwrap()]);
    let image = format!("{}/team/busybox:v1", private.host());
    s.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "--docker-server",
        &private.host(),
        "--docker-username",
        "tester",
        "--docker-password",
        "s3cret",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - {{name: c, image: "{image}", imagePullPolicy: Always, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: mirrored}}
spec:
  containers:
  - {{name: c, image: docker.io/library/mirrored:v1, command: ["sleep", "3600"]}}
"#
        ),
    );
    let pod = wait_pod(&s, "private", 60, "Ready", pod_ready);
    assert!(
        container_status(&pod, "c")["imageID"]
            .as_str()
            .unwrap()
            .contains("@sha256:"),
        "{pod}"
    );
    let ev = events_for(&s, "private");
    assert!(
        ev.contains(&format!("Pulling image \"{image}\"")),
        "no Pulling event:\n{ev}"
    );
    assert!(
        ev.contains(&format!("Successfully pulled image \"{image}\"")),
        "no Pulled event:\n{ev}"
    );
    wait_pod(&s, "mirrored", 60, "Ready", pod_ready);
    assert_eq!(
        exec_ok(&s, "mirrored", "cat /www/index.html"),
        "hello from skiff\n"
    );

    // Without the secret: ErrImagePull, then ImagePullBackOff, watched.
    let watch = WaitingWatch::start(&s, "nosecret", "{.state.waiting.reason}");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: nosecret}}
spec:
  containers:
  - {{name: c, image: "{image}", imagePullPolicy: Always, command: ["sleep", "3600"]}}
"#
        ),
    );
    let pod = wait_pod(&s, "nosecret", 60, "ImagePullBackOff", |v| {
        waiting_reason(v, "c") == "ImagePullBackOff"
    });
    let msg = container_status(&pod, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with(&format!("Back-off pulling image \"{image}\"")),
        "{msg}"
    );
    assert!(msg.contains("Not authorized"), "{msg}");
    // kubectl watched from before the pod existed: it saw every state.
    let seen = watch.finish();
    let errs = seen.lines().position(|l| l == "ErrImagePull");
    let backoff = seen.lines().position(|l| l == "ImagePullBackOff");
    assert!(
        errs.is_some() && backoff.is_some() && errs < backoff,
        "states seen: {seen:?}"
    );
    let ev = events_for(&s, "nosecret");
    for want in [
        "Error: ErrImagePull",
        "Error: ImagePullBackOff",
        &format!("Back-off pulling image \"{image}\""),
    ] {
        assert!(ev.contains(want), "no {want:?} event:\n{ev}");
    }
}

/// A tmpfs of `size` over `path` while the guard lives. Dropped after the
/// server (declared before it): the agent is gone and `skiff killall` has
/// taken its mounts down, so the unmount succeeds (detached if something
/// still holds it); then `remove` — the data dir, which the server's
/// temporary directory could not delete while the mount sat in it — goes.
struct Tmpfs {
    path: std::path::PathBuf,
    remove: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str, remove: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "skiff-test"])
            .arg(path)
            .status()
            .expect("running mount");
        assert!(st.success(), "mounting a tmpfs on {}", path.display());
        Tmpfs {
            path: path.to_path_buf(),
            remove: remove.to_path_buf(),
        }
    }

    /// (used, available) bytes.
    fn usage(&self) -> (u64, u64) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        let f = st.f_frsize as u64;
        (
            (st.f_blocks as u64 - st.f_bfree as u64) * f,
            st.f_bavail as u64 * f,
        )
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscalls on a NUL-terminated path.
        unsafe {
            if libc::umount2(c.as_ptr(), 0) != 0 {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.remove);
    }
}

/// A tar with one file of `len` bytes that no compressor shrinks
/// (splitmix64 output).
fn incompressible_layer(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x5EED_5EED_5EED_5EED;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    data.truncate(len);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(len as u64);
    h.set_mtime(1_700_000_000);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut h, "big.bin", data.as_slice()).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn a_pull_that_fills_the_disk_fails_the_pod_cleanly_and_the_node_goes_on() {
    const MIB: u64 = 1024 * 1024;
    let registry = Registry::start(None);
    let layer = incompressible_layer(16 * MIB as usize);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
    }))
    .unwrap();
    registry.push("test/big:v1", &config, &layer, None);
    registry.push_busybox("test/small:v1", None);
    let dir = tempfile::tempdir().unwrap();
    let registries = dir.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  \"{r}\":\n    endpoint: [\"http://{r}\"]\n",
            r = registry.host()
        ),
    )
    .unwrap();

    // The agent's whole image store (blobs, layers, staging) on 12 MiB of
    // tmpfs, mounted before the agent starts. Declared before the server:
    // dropped after it.
    let mut tmpfs = None;
    let s = Server::start_agent_prepared(
        &["--private-registry", registries.to_str().unwrap()],
        |data| {
            tmpfs = Some(Tmpfs::mount(
                &data.join("agent").join("images"),
                "12m",
                data,
            ));
        },
    );
    let tmpfs = tmpfs.as_ref().unwrap();
    let blobs_dir = tmpfs.path.join("blobs").join("sha256");
    let blobs = || -> Vec<String> {
        std::fs::read_dir(&blobs_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let (used_before, free) = tmpfs.usage();
    assert!(
        free < layer.len() as u64 && free > MIB,
        "the store must have room for small things only: {free} bytes free"
    );

    // Every state the container shows, from before the pod exists.
    let watch = WaitingWatch::start(
        &s,
        "big",
        "{.state.waiting.reason}|{.state.waiting.message}",
    );
    let big = format!("{}/test/big:v1", registry.host());
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: big}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: "{big}", command: ["sleep", "3600"]}}
"#
        ),
    );
    let pod = wait_pod(&s, "big", 60, "ImagePullBackOff", |v| {
        waiting_reason(v, "c") == "ImagePullBackOff"
    });
    // The back-off is 10 s: no second attempt has started yet, so the
    // store is as the failed one left it.
    let names = blobs();
    let hex = sha(&layer).trim_start_matches("sha256:").to_string();
    assert!(
        !names.iter().any(|n| *n == hex || n.starts_with('.')),
        "a partial or temporary blob is left: {names:?}"
    );
    let (used_after, _) = tmpfs.usage();
    assert!(
        used_after < used_before + MIB,
        "the failed pull left {} bytes behind",
        used_after - used_before
    );
    let msg = container_status(&pod, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.starts_with(&format!("Back-off pulling image \"{big}\"")),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("no space left on device"),
        "{msg}"
    );
    let seen = watch.finish();
    let err_pull = seen
        .lines()
        .position(|l| l.starts_with("ErrImagePull|"))
        .unwrap_or_else(|| panic!("ErrImagePull never shown: {seen}"));
    let backoff = seen
        .lines()
        .position(|l| l.starts_with("ImagePullBackOff|"))
        .unwrap_or_else(|| panic!("ImagePullBackOff never shown: {seen}"));
    assert!(err_pull < backoff, "{seen}");
    let err_line = seen.lines().nth(err_pull).unwrap().to_lowercase();
    assert!(err_line.contains("no space left on device"), "{err_line}");
    let ev = events_for(&s, "big");
    assert!(
        ev.lines().any(|l| l.starts_with("Failed ")
            && l.contains(&format!("Failed to pull image \"{big}\""))
            && l.to_lowercase().contains("no space left on device")),
        "no Failed event for the pull:\n{ev}"
    );
    assert!(ev.contains("Error: ErrImagePull"), "{ev}");

    // The same agent still pulls and runs a small image (its layer is the
    // imported busybox one: only the manifest and config are fetched).
    let small = format!("{}/test/small:v1", registry.host());
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: small}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{small}"
    imagePullPolicy: Always
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    readinessProbe:
      httpGet: {{path: /index.html, port: 8080}}
      periodSeconds: 1
"#
        ),
    );
    let pod = wait_pod(&s, "small", 60, "Ready", pod_ready);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let body = http_get_eventually(&ip, 8080, "/index.html", 10);
    assert!(body.ends_with("\r\n\r\nhello from skiff\n"), "{body}");
    assert!(
        events_for(&s, "small").contains(&format!("Successfully pulled image \"{small}\"")),
        "{}",
        events_for(&s, "small")
    );
    // The big pod is still refused the same way, not stuck or crashed.
    let pod = wait_pod(&s, "big", 5, "still backing off", |v| {
        let r = waiting_reason(v, "c");
        r == "ImagePullBackOff" || r == "ErrImagePull"
    });
    assert_eq!(pod["status"]["phase"], "Pending");
}

// ------------------------------------------------ 7. pod-level cgroups

/// A cgroup file of the pod cgroup `path` (v1: under `controller`).
fn cgroup_file(controller: &str, path: &str, file: &str) -> String {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let p = if v2 {
        format!("/sys/fs/cgroup{path}/{file}")
    } else {
        format!("/sys/fs/cgroup/{controller}{path}/{file}")
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn pod_cgroups_carry_the_pod_level_limits() {
    let s = Server::start_agent(&[]);
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  containers:
  - name: a
    image: busybox:test
    command: ["sleep", "3600"]
    resources: {limits: {cpu: 200m, memory: 32Mi}}
  - name: b
    image: busybox:test
    command: ["sleep", "3600"]
    resources: {limits: {cpu: 300m, memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: burstable}
spec:
  initContainers:
  - name: init
    image: busybox:test
    command: ["true"]
    resources: {requests: {cpu: 100m}, limits: {cpu: "1", memory: 128Mi}}
  containers:
  - name: a
    image: busybox:test
    command: ["sleep", "3600"]
    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 250m, memory: 48Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: partial}
spec:
  containers:
  - name: a
    image: busybox:test
    command: ["sleep", "3600"]
    resources: {limits: {cpu: 100m, memory: 16Mi}}
  - name: b
    image: busybox:test
    command: ["sleep", "3600"]
"#,
    );
    let mib = 1024 * 1024;
    let unlimited_mem = |v: &str| v == "max" || v.parse::<u64>().unwrap() > (1 << 60);
    let uid = |p: &Value| p["metadata"]["uid"].as_str().unwrap().to_string();

    let pod = wait_pod(&s, "guaranteed", 60, "Ready", pod_ready);
    assert_eq!(pod["status"]["qosClass"], "Guaranteed");
    let path = format!("/kubepods/pod{}", uid(&pod));
    if v2 {
        assert_eq!(cgroup_file("", &path, "memory.max"), (96 * mib).to_string());
        assert_eq!(cgroup_file("", &path, "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            cgroup_file("memory", &path, "memory.limit_in_bytes"),
            (96 * mib).to_string()
        );
        assert_eq!(cgroup_file("cpu", &path, "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup_file("cpu", &path, "cpu.cfs_period_us"), "100000");
        assert_eq!(cgroup_file("cpu", &path, "cpu.shares"), "512");
    }

    // The init container's larger limits win over the containers' sum.
    let pod = wait_pod(&s, "burstable", 60, "Ready", pod_ready);
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    let path = format!("/kubepods/burstable/pod{}", uid(&pod));
    if v2 {
        assert_eq!(
            cgroup_file("", &path, "memory.max"),
            (128 * mib).to_string()
        );
        assert_eq!(cgroup_file("", &path, "cpu.max"), "100000 100000");
    } else {
        assert_eq!(
            cgroup_file("memory", &path, "memory.limit_in_bytes"),
            (128 * mib).to_string()
        );
        assert_eq!(cgroup_file("cpu", &path, "cpu.cfs_quota_us"), "100000");
    }

    // A container without limits: the pod has none either.
    let pod = wait_pod(&s, "partial", 60, "Ready", pod_ready);
    let path = format!("/kubepods/burstable/pod{}", uid(&pod));
    if v2 {
        assert_eq!(cgroup_file("", &path, "memory.max"), "max");
        assert_eq!(cgroup_file("", &path, "cpu.max"), "max 100000");
    } else {
        let mem = cgroup_file("memory", &path, "memory.limit_in_bytes");
        assert!(unlimited_mem(&mem), "{mem}");
        assert_eq!(cgroup_file("cpu", &path, "cpu.cfs_quota_us"), "-1");
    }
    // The containers' own limits still apply inside.
    let inner = s.kubectl_ok(&[
        "exec",
        "partial",
        "-c",
        "a",
        "--",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(inner.trim(), (16 * mib).to_string());
}

// ------------------------------------------ 8. probes, hooks, DNS policies

const PROBES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: startup}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "sleep 6; touch /tmp/started; exec httpd -f -p 8080 -h /www"]
    startupProbe: {exec: {command: [cat, /tmp/started]}, periodSeconds: 1, failureThreshold: 30}
    livenessProbe: {exec: {command: [cat, /tmp/started]}, periodSeconds: 1, failureThreshold: 1}
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: startfail}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    startupProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: httplive}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, failureThreshold: 30}
    livenessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: hookweb}
spec:
  containers:
  - name: web
    image: busybox:test
    command: ["httpd", "-f", "-vv", "-p", "8080", "-h", "/www"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: dnsnone}
spec:
  dnsPolicy: None
  dnsConfig:
    nameservers: [10.43.0.99]
    searches: [a.example, b.example, a.example]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers:
  - {name: c, image: busybox:test, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: dnsmerge, namespace: default}
spec:
  dnsConfig:
    nameservers: [10.43.0.99]
    searches: [extra.example]
    options: [{name: ndots, value: "3"}, {name: timeout, value: "1"}]
  containers:
  - {name: c, image: busybox:test, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: dnshost}
spec:
  dnsPolicy: Default
  containers:
  - {name: c, image: busybox:test, command: ["sleep", "3600"]}
"#;

/// The `hooks` pod, whose httpGet hooks call `web` (hookweb's pod IP).
fn hooks_pod(web: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo from-post-start > /tmp/hooked"]}}}}
      preStop: {{httpGet: {{host: "{web}", port: 8080, path: /pre-stop-hook}}}}
  - name: d
    image: busybox:test
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {{httpGet: {{host: "{web}", port: 8080, path: /post-start-hook}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhook}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "exit 3"]}}}}
"#
    )
}

fn restart_count(v: &Value, name: &str) -> i64 {
    container_status(v, name)["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn probes_hooks_and_dns_policies_follow_upstream() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], PROBES);

    // Startup probe: until it passes, the container is not started and the
    // liveness probe (which would fail at once) does not run.
    let pod = wait_pod(&s, "startup", 60, "running", |v| {
        container_status(v, "c")["state"]["running"].is_object()
    });
    assert_eq!(container_status(&pod, "c")["started"], false, "{pod:#}");
    assert_eq!(container_status(&pod, "c")["ready"], false);
    // Then started, ready through the tcpSocket probe, never restarted.
    let pod = wait_pod(&s, "startup", 60, "Ready", pod_ready);
    assert_eq!(container_status(&pod, "c")["started"], true);
    assert_eq!(
        restart_count(&pod, "c"),
        0,
        "liveness ran before startup passed"
    );

    // A startup probe that keeps failing restarts the container.
    wait_pod(&s, "startfail", 60, "a restart", |v| {
        restart_count(v, "c") >= 1
    });
    let events = events_for(&s, "startfail");
    assert!(events.contains("Startup probe failed"), "{events}");
    assert!(
        events.contains("Container c failed startup probe, will be restarted"),
        "{events}"
    );

    // httpGet liveness: a 404 is a failure, and the container is restarted.
    // (Its startup probe holds liveness back until httpd listens.)
    wait_pod(&s, "httplive", 60, "started", |v| {
        container_status(v, "c")["started"] == true
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        restart_count(&wait_pod(&s, "httplive", 5, "", |_| true), "c"),
        0,
        "restarted while healthy"
    );
    exec_ok(&s, "httplive", "rm /www/index.html");
    wait_pod(&s, "httplive", 60, "a restart", |v| {
        restart_count(v, "c") >= 1
    });
    let events = events_for(&s, "httplive");
    assert!(
        events.contains("Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{events}"
    );

    // Hooks: postStart exec and httpGet, preStop httpGet on deletion.
    let web = wait_pod(&s, "hookweb", 60, "Ready", pod_ready);
    let web_ip = web["status"]["podIP"].as_str().unwrap().to_string();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &hooks_pod(&web_ip));
    wait_pod(&s, "hooks", 60, "Ready", pod_ready);
    assert_eq!(
        s.kubectl_ok(&["exec", "hooks", "-c", "c", "--", "cat", "/tmp/hooked"]),
        "from-post-start\n"
    );
    let web_log = || s.kubectl_ok(&["logs", "hookweb"]);
    assert!(web_log().contains("url:/post-start-hook"), "{}", web_log());
    assert!(!web_log().contains("url:/pre-stop-hook"));
    s.kubectl_ok(&["delete", "pod", "hooks", "--wait=true"]);
    assert!(web_log().contains("url:/pre-stop-hook"), "{}", web_log());
    // A failing postStart hook: the event, and the container is killed
    // and restarted.
    wait_pod(&s, "badhook", 60, "a restart", |v| {
        restart_count(v, "c") >= 1
    });
    let events = events_for(&s, "badhook");
    assert!(events.contains("FailedPostStartHook"), "{events}");
    assert!(
        events.contains(
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"c\" in Pod \"badhook_default("
        ),
        "{events}"
    );

    // DNS: None takes only dnsConfig (duplicates dropped); ClusterFirst
    // appends dnsConfig and lets its options override; Default is the
    // node's resolver.
    for p in ["dnsnone", "dnsmerge", "dnshost"] {
        wait_pod(&s, p, 60, "Ready", pod_ready);
    }
    assert_eq!(
        exec_ok(&s, "dnsnone", "cat /etc/resolv.conf"),
        "search a.example b.example\nnameserver 10.43.0.99\noptions ndots:2 edns0\n"
    );
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let host_words = |key: &str| -> Vec<String> {
        host.lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|r| r.split_whitespace().map(String::from))
            .collect()
    };
    let mut search = vec![
        "default.svc.cluster.local".to_string(),
        "svc.cluster.local".into(),
        "cluster.local".into(),
    ];
    search.extend(host_words("search "));
    search.push("extra.example".into());
    assert_eq!(
        exec_ok(&s, "dnsmerge", "cat /etc/resolv.conf"),
        format!(
            "search {}\nnameserver 10.43.0.10\nnameserver 10.43.0.99\noptions ndots:3 timeout:1\n",
            search.join(" ")
        )
    );
    let resolv = exec_ok(&s, "dnshost", "cat /etc/resolv.conf");
    let mut servers = host_words("nameserver ");
    servers.truncate(3);
    for ns in &servers {
        assert!(resolv.contains(&format!("nameserver {ns}\n")), "{resolv}");
    }
    assert!(!resolv.contains("10.43.0.10"), "{resolv}");
}
