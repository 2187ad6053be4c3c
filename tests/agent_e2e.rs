//! The node agent end to end with kubectl against `skiff server` and its
//! embedded agent: real containers (libcontainer), the pod network, volumes,
//! probes, restarts, streams, and cleanup. The busybox image is built from
//! Debian's busybox-static and imported air-gapped (see common::busybox_archive).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{NODE, Server, container_status, pod_ready, wait_pod};
use serde_json::Value;

fn get_pod(s: &Server, name: &str) -> Value {
    let out = s.kubectl_ok(&["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn http_get(ip: &str, port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect((ip, port)).expect("connect to pod");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

fn links() -> String {
    String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string()
}

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: hello-config, mode: "fast"}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
  annotations: {note: "an annotation"}
spec:
  containers:
  - name: web
    image: busybox:test
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{containerPort: 8080, name: http}]
    readinessProbe:
      httpGet: {path: /index.html, port: http}
      periodSeconds: 1
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 500m, memory: 64Mi}
    env:
    - {name: LITERAL, value: plain}
    - {name: EXPANDED, value: "$(LITERAL)-x"}
    - name: FROM_CM
      valueFrom: {configMapKeyRef: {name: web-config, key: greeting}}
    - name: FROM_SECRET
      valueFrom: {secretKeyRef: {name: web-secret, key: password}}
    - name: MY_POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: MY_NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: MEM_LIMIT
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    envFrom:
    - prefix: CM_
      configMapRef: {name: web-config}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: mem, mountPath: /mem}
    - {name: cm, mountPath: /etc/cm}
    - {name: sec, mountPath: /etc/sec}
    - {name: info, mountPath: /etc/info}
    - {name: proj, mountPath: /etc/proj}
    - {name: host, mountPath: /host}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - {name: cm, configMap: {name: web-config}}
  - {name: sec, secret: {secretName: web-secret}}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
  - name: proj
    projected:
      sources:
      - configMap: {name: web-config, items: [{key: mode, path: cm-mode}]}
      - secret: {name: web-secret}
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
  - name: host
    hostPath: {path: HOSTDIR, type: DirectoryOrCreate}
"#;

#[test]
fn pod_runs_serves_and_shows_its_env_and_volumes() {
    let s = Server::start_agent(&[]);
    let hostdir = s.dir.path().join("hostpath-vol");
    let manifest = WEB.replace("HOSTDIR", &hostdir.display().to_string());
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    let pod = wait_pod(&s, "web", 60, "Ready", pod_ready);

    // Status as upstream reports it.
    let st = &pod["status"];
    assert_eq!(st["phase"], "Running");
    assert_eq!(st["hostIP"], "127.0.0.1");
    assert_eq!(st["qosClass"], "Burstable");
    let ip = st["podIP"].as_str().expect("podIP").to_string();
    assert!(ip.starts_with("10.42."), "pod IP {ip}");
    let cs = container_status(&pod, "web");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(
        cs["containerID"].as_str().unwrap().starts_with("skiff://"),
        "{cs}"
    );
    assert!(cs["imageID"].as_str().unwrap().contains("@sha256:"), "{cs}");
    assert!(cs["state"]["running"]["startedAt"].is_string());

    // It serves HTTP on its pod IP, through the bridge.
    let body = http_get(&ip, 8080, "/index.html");
    assert!(
        body.contains("200 OK") && body.contains("hello from skiff"),
        "{body}"
    );

    // Environment.
    let env = s.kubectl_ok(&["exec", "web", "--", "env"]);
    for want in [
        "LITERAL=plain",
        "EXPANDED=plain-x",
        "FROM_CM=hello-config",
        "FROM_SECRET=s3cret",
        "MY_POD=web",
        &format!("MY_NODE={NODE}"),
        "MEM_LIMIT=64",
        "CM_greeting=hello-config",
        "CM_mode=fast",
        "KUBERNETES_SERVICE_HOST=10.43.0.1",
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
    }
    // Volumes.
    let sh = |cmd: &str| s.kubectl_ok(&["exec", "web", "--", "sh", "-c", cmd]);
    assert_eq!(sh("cat /etc/cm/greeting"), "hello-config");
    assert_eq!(sh("cat /etc/sec/password"), "s3cret");
    assert_eq!(sh("cat /etc/info/name"), "web");
    assert!(sh("cat /etc/info/labels").contains("app=\"web\""));
    assert_eq!(
        sh("cat /etc/proj/cm-mode /etc/proj/password /etc/proj/ns"),
        "fasts3cretdefault"
    );
    assert!(sh("grep ' /mem ' /proc/mounts").contains("tmpfs"));
    sh("echo from-pod > /host/f && echo scratch > /scratch/f");
    assert_eq!(
        std::fs::read_to_string(hostdir.join("f")).unwrap(),
        "from-pod\n"
    );
    // Pod files: hostname, hosts, resolv.conf as the kubelet writes them.
    assert_eq!(sh("hostname"), "web\n");
    assert!(sh("cat /etc/hosts").contains(&format!("{ip}\tweb")));
    let resolv = sh("cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    // cgroup memory limit from resources.limits.
    let limit = sh(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    );
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string());

    // ConfigMap updates reach the running container.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "web-config",
        "-p",
        r#"{"data":{"greeting":"updated"}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sh("cat /etc/cm/greeting") != "updated" {
        assert!(
            Instant::now() < deadline,
            "configMap update did not propagate"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Logs (httpd -f logs nothing by itself; check the CRI path works on a
    // second container below) and exec exit codes.
    let out = s.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Delete: nothing left behind (mounts, veth, cgroup, IP lease).
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    s.kubectl_ok(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mounts = mounts_under(&s.dir.path().join("agent"));
        let pod_mounts: Vec<&String> = mounts.iter().filter(|m| m.contains(&uid)).collect();
        let veth = links()
            .lines()
            .any(|l| l.contains(&format!("veth{}", &uid.replace('-', "")[..8])));
        let cgroup = std::path::Path::new(&format!(
            "/sys/fs/cgroup/memory/kubepods/burstable/pod{uid}"
        ))
        .exists();
        let lease = std::fs::read_dir(s.dir.path().join("agent/net/ipam"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains(&uid)
                })
            })
            .unwrap_or(false);
        if pod_mounts.is_empty() && !cgroup && !lease && !veth {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: mounts {pod_mounts:?} cgroup {cgroup} lease {lease} veth {veth}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const LIFECYCLE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "echo started; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "echo allocating; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo done"]
    resources: {limits: {memory: 24Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "touch /tmp/alive; echo up; sleep 3600"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["cat", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {name: inits}
spec:
  restartPolicy: Never
  initContainers:
  - {name: first, image: busybox:test, command: ["sh", "-c", "echo one >> /work/order"], volumeMounts: [{name: w, mountPath: /work}]}
  - {name: second, image: busybox:test, command: ["sh", "-c", "echo two >> /work/order"], volumeMounts: [{name: w, mountPath: /work}]}
  containers:
  - {name: main, image: busybox:test, command: ["sh", "-c", "cat /work/order"], volumeMounts: [{name: w, mountPath: /work}]}
  volumes: [{name: w, emptyDir: {}}]
"#;

#[test]
fn restarts_back_off_oom_probes_and_init_order() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], LIFECYCLE);

    // Init containers ran in order, then main, which succeeded.
    let p = wait_pod(&s, "inits", 60, "Succeeded", |v| {
        v["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        container_status(&p, "main")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(s.kubectl_ok(&["logs", "inits"]), "one\ntwo\n");
    assert_eq!(s.kubectl_ok(&["logs", "inits", "-c", "first"]), "");

    // A crashing container restarts and backs off.
    let p = wait_pod(&s, "crash", 60, "CrashLoopBackOff", |v| {
        container_status(v, "c")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let cs = container_status(&p, "c");
    assert!(cs["restartCount"].as_i64().unwrap() >= 1, "{cs}");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert!(
        cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=c pod=crash_default("),
        "{cs}"
    );
    assert_eq!(s.kubectl_ok(&["logs", "crash", "--previous"]), "started\n");
    let ts = s.kubectl_ok(&["logs", "crash", "--timestamps"]);
    assert!(ts.ends_with(" started\n") && ts.starts_with("20"), "{ts}");

    // A memory hog is OOMKilled.
    let p = wait_pod(&s, "hog", 60, "Failed", |v| {
        v["status"]["phase"] == "Failed"
    });
    let t = &container_status(&p, "c")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137);

    // Readiness follows the probe both ways.
    wait_pod(&s, "probed", 60, "running", |v| {
        container_status(v, "c")["state"]["running"].is_object()
    });
    let p = get_pod(&s, "probed");
    assert!(!pod_ready(&p));
    s.kubectl_ok(&["exec", "probed", "--", "touch", "/tmp/ready"]);
    wait_pod(&s, "probed", 20, "Ready", pod_ready);
    s.kubectl_ok(&["exec", "probed", "--", "rm", "/tmp/ready"]);
    wait_pod(&s, "probed", 20, "not Ready", |v| !pod_ready(v));
    // Liveness failure restarts the container.
    s.kubectl_ok(&["exec", "probed", "--", "rm", "/tmp/alive"]);
    let p = wait_pod(&s, "probed", 30, "a restart", |v| {
        container_status(v, "c")["restartCount"].as_i64() >= Some(1)
    });
    let code = &container_status(&p, "c")["lastState"]["terminated"]["exitCode"];
    assert!(
        code == 143 || code == 137,
        "killed by SIGTERM or SIGKILL: {code}"
    );
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
        "-o",
        "json",
    ]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("Container c failed liveness probe, will be restarted"),
        "{events}"
    );
}

const BAD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  containers: [{name: c, image: "127.0.0.1:1/nope/missing:v1", imagePullPolicy: Always}]
---
apiVersion: v1
kind: Pod
metadata: {name: nocmd}
spec:
  containers: [{name: c, image: busybox:test, command: ["/no/such/binary"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: nocm}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sleep", "3600"]
    env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, key: k}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: novol}
spec:
  containers: [{name: c, image: busybox:test, command: ["sleep", "3600"], volumeMounts: [{name: v, mountPath: /v}]}]
  volumes: [{name: v, configMap: {name: absent-too}}]
---
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec:
  containers: [{name: c, image: busybox:test, command: ["sh", "-c", "echo fine; sleep 3600"]}]
"#;

#[test]
fn bad_input_shows_upstream_reasons_and_the_node_keeps_going() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], BAD);
    wait_pod(&s, "noimage", 60, "ErrImagePull/ImagePullBackOff", |v| {
        let r = &container_status(v, "c")["state"]["waiting"]["reason"];
        r == "ErrImagePull" || r == "ImagePullBackOff"
    });
    let p = wait_pod(&s, "nocmd", 60, "a start error", |v| {
        container_status(v, "c")["lastState"]["terminated"]["reason"] == "StartError"
            || container_status(v, "c")["state"]["terminated"]["reason"] == "StartError"
    });
    let cs = container_status(&p, "c").to_string();
    assert!(cs.contains("/no/such/binary"), "{cs}");
    wait_pod(&s, "nocm", 60, "CreateContainerConfigError", |v| {
        container_status(v, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let p = wait_pod(&s, "nocm", 5, "message", |_| true);
    assert_eq!(
        container_status(&p, "c")["state"]["waiting"]["message"],
        "configmap \"absent\" not found"
    );
    wait_pod(&s, "novol", 60, "ContainerCreating", |v| {
        container_status(v, "c")["state"]["waiting"]["reason"] == "ContainerCreating"
    });
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=novol",
        "-o",
        "json",
    ]);
    assert!(
        events.contains("FailedMount") && events.contains("configmap \\\"absent-too\\\" not found"),
        "{events}"
    );
    // Everything else still runs.
    wait_pod(&s, "fine", 60, "Ready", pod_ready);
    assert_eq!(s.kubectl_ok(&["logs", "fine"]), "fine\n");
    // Creating the missing ConfigMap lets the stuck pods start.
    s.kubectl_ok(&["create", "configmap", "absent-too", "--from-literal=a=b"]);
    wait_pod(&s, "novol", 60, "Ready", pod_ready);
}

#[test]
fn containers_survive_a_kill9_of_the_server_and_agent() {
    let mut s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: survivor}
spec:
  containers:
  - name: c
    image: busybox:test
    command: ["sh", "-c", "cat /proc/sys/kernel/random/uuid > /tmp/boot; echo booted; sleep 3600"]
"#,
    );
    let before = wait_pod(&s, "survivor", 60, "Ready", pod_ready);
    let marker = s.kubectl_ok(&["exec", "survivor", "--", "cat", "/tmp/boot"]);
    let keeper_file = s.dir.path().join("agent/rt/keeper.pid");
    let keeper = std::fs::read_to_string(&keeper_file).unwrap();
    s.restart_kill9();
    s.wait_node_ready();
    // The same keeper serves the new server's agent; the one the new
    // server forked at its start stood down.
    assert_eq!(std::fs::read_to_string(&keeper_file).unwrap(), keeper);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", keeper.trim())).unwrap(),
        "skiff-keeper\n",
        "the keeper was not the one forked at the first server's start"
    );
    let dir = s.dir.path().display().to_string();
    s.wait_for("the new server's standby keeper to exit", 10, || {
        let standbys = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let p = e.path();
                std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c == "skiff-keeper\n")
                    && std::fs::read(p.join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir))
            })
            .count();
        (standbys == 1).then_some(())
    });
    // Give the new agent time to (wrongly) restart anything.
    std::thread::sleep(Duration::from_secs(3));
    let after = wait_pod(&s, "survivor", 30, "Ready", pod_ready);
    let (b, a) = (
        container_status(&before, "c"),
        container_status(&after, "c"),
    );
    assert_eq!(a["restartCount"], 0);
    assert_eq!(a["containerID"], b["containerID"]);
    assert_eq!(
        a["state"]["running"]["startedAt"],
        b["state"]["running"]["startedAt"]
    );
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);
    assert_eq!(
        s.kubectl_ok(&["exec", "survivor", "--", "cat", "/tmp/boot"]),
        marker
    );
    assert_eq!(s.kubectl_ok(&["logs", "survivor"]), "booted\n");
    // A pod created after the restart gets a different address.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: second}\nspec:\n  containers: [{name: c, image: busybox:test, command: [sleep, '3600']}]\n",
    );
    let second = wait_pod(&s, "second", 60, "Ready", pod_ready);
    assert_ne!(second["status"]["podIP"], after["status"]["podIP"]);
}

#[test]
fn logs_follow_exec_attach_port_forward_and_cp() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: streams}
spec:
  containers:
  - name: web
    image: busybox:test
    command: ["sh", "-c", "httpd -p 127.0.0.1:8080 -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
  - name: talk
    image: busybox:test
    stdin: true
    command: ["sh", "-c", "while read line; do echo got $line; done"]
"#,
    );
    wait_pod(&s, "streams", 60, "Ready", pod_ready);

    // logs --tail and -f: new lines keep arriving.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s
        .kubectl_ok(&["logs", "streams", "-c", "web"])
        .contains("tick 3")
    {
        assert!(
            Instant::now() < deadline,
            "no output from the web container"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tail = s.kubectl_ok(&["logs", "streams", "-c", "web", "--tail", "2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let mut follow = s
        .kubectl_command_pub(&["logs", "-f", "streams", "-c", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.matches("tick").count() < 15 && Instant::now() < deadline {
        let n = out.read(&mut buf).unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(got.matches("tick").count() >= 15, "follow stopped: {got}");
    // --since: only the last second's lines (a tick every 0.2 s, the
    // first one more than 3 s ago).
    let all = s.kubectl_ok(&["logs", "streams", "-c", "web"]);
    let recent = s.kubectl_ok(&["logs", "streams", "-c", "web", "--since=1s"]);
    assert!(
        !recent.is_empty() && recent.lines().count() < all.lines().count(),
        "--since=1s: {recent:?} of {} lines",
        all.lines().count()
    );
    assert!(!recent.lines().any(|l| l == "tick 0"), "{recent}");

    // exec with stdin (-i), and a terminal (-t) through script(1).
    let out = s.kubectl_stdin_ok(
        &[
            "exec",
            "-i",
            "streams",
            "-c",
            "web",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z",
        ],
        "hello stdin\n",
    );
    assert_eq!(out, "HELLO STDIN\n");
    let tty = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty cols 100 rows 30; kubectl --kubeconfig {} exec -it streams -c web -- sh -c 'sleep 1; tty; stty size'",
            s.kubeconfig.display()
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in exec -it: {text}"
    );
    // kubectl's terminal size reached the container's (resize channel).
    assert!(
        text.contains("30 100"),
        "terminal size not passed on: {text}"
    );

    // attach: stdin reaches the container, its output comes back.
    let mut attach = s
        .kubectl_command_pub(&["attach", "-i", "streams", "-c", "talk"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    attach.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    let mut aout = attach.stdout.take().unwrap();
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.contains("got ping") && Instant::now() < deadline {
        let n = aout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(got.contains("got ping"), "attach: {got:?}");
    assert!(
        s.kubectl_ok(&["logs", "streams", "-c", "talk"])
            .contains("got ping")
    );

    // port-forward reaches a server bound to the pod's own 127.0.0.1.
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut pf = s
        .kubectl_command_pub(&["port-forward", "pod/streams", &format!("{local}:8080")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", local)).is_ok() {
            body = http_get("127.0.0.1", local, "/index.html");
            if body.contains("hello from skiff") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains("hello from skiff"), "port-forward: {body}");

    // cp both ways (tar over exec).
    let src = s.dir.path().join("cp-src.txt");
    std::fs::write(&src, "copied content\n").unwrap();
    s.kubectl_ok(&[
        "cp",
        src.to_str().unwrap(),
        "streams:/tmp/in.txt",
        "-c",
        "web",
    ]);
    assert_eq!(
        s.kubectl_ok(&["exec", "streams", "-c", "web", "--", "cat", "/tmp/in.txt"]),
        "copied content\n"
    );
    let back = s.dir.path().join("cp-back.txt");
    s.kubectl_ok(&[
        "cp",
        "streams:/tmp/in.txt",
        back.to_str().unwrap(),
        "-c",
        "web",
    ]);
    assert_eq!(std::fs::read_to_string(back).unwrap(), "copied content\n");
}

/// kubectl with its WebSocket remote-command client turned off, so exec,
/// attach and cp take the SPDY/3.1 fallback.
fn spdy_kubectl(s: &Server, args: &[&str]) -> std::process::Command {
    let mut cmd = s.kubectl_command_pub(args);
    cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    cmd
}

fn spdy_kubectl_out(s: &Server, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = spdy_kubectl(s, args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn spdy_kubectl_ok(s: &Server, args: &[&str], stdin: Option<&str>) -> String {
    let out = spdy_kubectl_out(s, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} over SPDY: {}\n{}\n--- server log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.log_tail(40)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exec_attach_and_cp_over_spdy() {
    // --debug: the agent logs each SPDY exec/attach it serves.
    let s = Server::start_agent(&["--debug"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: spdy}
spec:
  containers:
  - name: main
    image: busybox:test
    command: ["sh", "-c", "httpd -p 127.0.0.1:8080 -h /www; while true; do sleep 1; done"]
  - name: talk
    image: busybox:test
    stdin: true
    command: ["sh", "-c", "while read line; do echo got $line; done"]
"#,
    );
    wait_pod(&s, "spdy", 60, "Ready", pod_ready);

    // The request goes out as a SPDY/3.1 upgrade and the agent answers the
    // protocol kubectl prefers (-v=8 prints headers both ways).
    let out = spdy_kubectl_out(
        &s,
        &["exec", "-v=8", "spdy", "-c", "main", "--", "true"],
        None,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Upgrade: SPDY/3.1"), "no SPDY upgrade: {log}");
    assert!(
        log.contains("X-Stream-Protocol-Version: v5.channel.k8s.io")
            && log.contains("101 Switching Protocols"),
        "{log}"
    );
    assert!(
        !log.to_ascii_lowercase().contains("upgrade: websocket"),
        "{log}"
    );

    // Separate stdout and stderr, and the exit code.
    let out = spdy_kubectl_out(
        &s,
        &[
            "exec",
            "spdy",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("err\n"),
        "{out:?}"
    );

    // stdin, ended by its EOF (the stdin stream's FIN).
    let input = "line one\nline two\n".repeat(2000);
    let out = spdy_kubectl_ok(
        &s,
        &["exec", "-i", "spdy", "-c", "main", "--", "cat"],
        Some(&input),
    );
    assert_eq!(out, input);

    // A terminal whose size follows kubectl's (the resize stream).
    let tty = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty cols 101 rows 31; kubectl --kubeconfig {} exec -it spdy -c main -- sh -c 'sleep 1; tty; stty size'",
            s.kubeconfig.display()
        ))
        .arg("/dev/null")
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("HOME", s.dir.path().join("home"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in exec -it: {text}"
    );
    assert!(text.contains("31 101"), "terminal size not passed: {text}");

    // attach: stdin reaches the container, its output comes back.
    let mut attach = spdy_kubectl(&s, &["attach", "-i", "spdy", "-c", "talk"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    attach.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    let mut aout = attach.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = aout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.contains("got ping") && Instant::now() < deadline {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push_str(&String::from_utf8_lossy(&b));
        }
    }
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(got.contains("got ping"), "attach over SPDY: {got:?}");

    // cp both ways (tar over exec with stdin).
    let src = s.dir.path().join("spdy-src.txt");
    let content = "copied over spdy\n".repeat(5000);
    std::fs::write(&src, &content).unwrap();
    spdy_kubectl_ok(
        &s,
        &[
            "cp",
            src.to_str().unwrap(),
            "spdy:/tmp/in.txt",
            "-c",
            "main",
        ],
        None,
    );
    assert_eq!(
        spdy_kubectl_ok(
            &s,
            &["exec", "spdy", "-c", "main", "--", "cat", "/tmp/in.txt"],
            None
        ),
        content
    );
    let back = s.dir.path().join("spdy-back.txt");
    spdy_kubectl_ok(
        &s,
        &[
            "cp",
            "spdy:/tmp/in.txt",
            back.to_str().unwrap(),
            "-c",
            "main",
        ],
        None,
    );
    assert_eq!(std::fs::read_to_string(back).unwrap(), content);

    // port-forward's plain SPDY fallback shares the handshake.
    let local = common::pick_free_port();
    let mut pf = s
        .kubectl_command_pub(&["port-forward", "pod/spdy", &format!("{local}:8080")])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !body.contains("hello from skiff") {
        if std::net::TcpStream::connect(("127.0.0.1", local)).is_ok() {
            body = http_get("127.0.0.1", local, "/index.html");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(
        body.contains("hello from skiff"),
        "port-forward over SPDY: {body}"
    );

    // The agent served these over SPDY, exec and attach alike.
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("exec over SPDY/3.1"),
        "agent log has no SPDY exec"
    );
    assert!(
        log.contains("attach over SPDY/3.1"),
        "agent log has no SPDY attach"
    );
}

#[test]
fn service_account_token_is_mounted_and_accepted_by_the_api_server() {
    // Serving on every interface with the bridge address advertised, pods
    // reach the API server through the `kubernetes` Service (10.43.0.1).
    let s = Server::start_agent(&[
        "--bind-address",
        "0.0.0.0",
        "--advertise-address",
        "10.42.0.1",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sa}\nspec:\n  containers: [{name: c, image: busybox:test, command: [sleep, '3600']}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: nosa}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: c, image: busybox:test, command: [sleep, '3600']}]\n",
    );
    let pod = wait_pod(&s, "sa", 60, "Ready", pod_ready);
    let vols = pod["spec"]["volumes"].to_string();
    assert!(vols.contains("kube-api-access-"), "{vols}");
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = s.kubectl_ok(&["exec", "sa", "--", "cat", &format!("{dir}/token")]);
    assert_eq!(
        s.kubectl_ok(&["exec", "sa", "--", "cat", &format!("{dir}/namespace")]),
        "default"
    );
    let ca = s.kubectl_ok(&["exec", "sa", "--", "cat", &format!("{dir}/ca.crt")]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // The API server authenticates the pod's token as its service account.
    let out = std::process::Command::new("kubectl")
        .args(["--server", &s.url(), "--certificate-authority"])
        .arg(s.dir.path().join("server/tls/server-ca.crt"))
        .args([
            "--token",
            token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system:serviceaccount:default:default",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eps = s.kubectl_ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
    ]);
    assert_eq!(eps, format!("10.42.0.1:{}", s.port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = s.kubectl(&[
            "exec",
            "sa",
            "--",
            "sh",
            "-c",
            "nc -w 3 10.43.0.1 443 -e true && echo reachable",
        ]);
        if String::from_utf8_lossy(&out.stdout).contains("reachable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "API server not reachable from the pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Opted out: no volume, nothing mounted.
    wait_pod(&s, "nosa", 60, "Ready", pod_ready);
    let out = s.kubectl(&["exec", "nosa", "--", "ls", dir]);
    assert!(!out.status.success());
}
