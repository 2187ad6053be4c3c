//! Shared harness for integration tests: runs a real `skiff server` on a
//! private data directory and a free port on 127.0.0.1.
#![allow(dead_code)]

use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a fresh server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `Server::start` retries when the chosen port was taken by
/// someone else between picking it and the server binding it.
const START_ATTEMPTS: usize = 3;

pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    child: Child,
    /// Extra flags given to [`Server::start_with`]; reused on restart.
    extra_args: Vec<String>,
    /// Held while a server with a real node agent runs: agents share the
    /// host's bridge and nftables table, so they run one at a time.
    agent_lock: Option<File>,
}

impl Server {
    /// Starts a server on a new temporary data directory and a free port and
    /// waits until it is ready.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Like [`Server::start`], with extra `skiff server` flags (kept across
    /// [`Server::restart_kill9`]).
    pub fn start_with(extra_args: &[&str]) -> Server {
        Server::start_with_prepared(extra_args, |_| {})
    }

    /// Like [`Server::start_with`], after `prepare` filled the data dir.
    pub fn start_with_prepared(extra_args: &[&str], prepare: impl FnOnce(&Path)) -> Server {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let dir = tempfile::Builder::new()
            .prefix("skiff-test-")
            .tempdir()
            .expect("creating temp dir");
        prepare(dir.path());
        let kubeconfig = dir.path().join("kc.yaml");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut child = spawn(dir.path(), port, &kubeconfig, &extra_args);
            match wait_ready(&mut child, port, &kubeconfig) {
                Ok(()) => {
                    return Server {
                        port,
                        dir,
                        kubeconfig,
                        child,
                        extra_args,
                        agent_lock: None,
                    };
                }
                Err(e) => {
                    kill_and_wait(&mut child);
                    last_error = e;
                    // The port may have been taken by another process between
                    // picking and binding it: try again with a new one.
                }
            }
        }
        panic!(
            "skiff server did not become ready: {last_error}\n--- server log ---\n{}",
            log_tail(dir.path(), 100)
        );
    }

    /// Kills the server with SIGKILL (no graceful shutdown) and starts it
    /// again on the same data directory and port.
    pub fn restart_kill9(&mut self) {
        kill_and_wait(&mut self.child);
        // Start from a clean slate so readiness means the *new* process wrote it.
        let _ = std::fs::remove_file(&self.kubeconfig);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut child = spawn(
                self.dir.path(),
                self.port,
                &self.kubeconfig,
                &self.extra_args,
            );
            match wait_ready(&mut child, self.port, &self.kubeconfig) {
                Ok(()) => {
                    self.child = child;
                    return;
                }
                Err(e) => {
                    kill_and_wait(&mut child);
                    if Instant::now() >= deadline {
                        panic!(
                            "skiff server did not come back after SIGKILL: {e}\n--- server log ---\n{}",
                            log_tail(self.dir.path(), 100)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// PID of the running server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A `kube` client from the admin kubeconfig, never through a proxy and
    /// only to 127.0.0.1.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("reading kubeconfig");
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config from kubeconfig");
        cfg.proxy_url = None;
        assert_eq!(
            cfg.cluster_url.host(),
            Some("127.0.0.1"),
            "kubeconfig points elsewhere"
        );
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// The server's resident set size (VmRSS), KiB.
    /// Polls `f` every 200 ms until it yields a value; after `secs`,
    /// fails naming `what`, with the end of the server's log.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- server log ---\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(self.dir.path(), lines)
    }

    /// Runs `/usr/bin/kubectl` against this server, with its own HOME so the
    /// discovery cache does not leak between tests.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running /usr/bin/kubectl")
    }

    /// Like [`Server::kubectl`], but panics (with kubectl's output and the
    /// tail of the server log) unless kubectl succeeds; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        self.check_ok(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with `stdin` fed to it (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running /usr/bin/kubectl");
        let mut pipe = child.stdin.take().expect("kubectl stdin");
        let input = stdin.to_string();
        // Write from another thread so a large input cannot deadlock against
        // kubectl filling its output pipes.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("waiting for kubectl");
        let _ = writer.join();
        out
    }

    /// Like [`Server::kubectl_stdin`], but panics unless kubectl succeeds.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_stdin(args, stdin);
        self.check_ok(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn check_ok(&self, args: &[&str], out: &Output) {
        if !out.status.success() {
            panic!(
                "kubectl {} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server log ---\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail(40)
            );
        }
    }

    /// A kubectl command for this server, to spawn (long-running commands).
    #[allow(dead_code)]
    pub fn kubectl_command_pub(&self, args: &[&str]) -> Command {
        self.kubectl_command(args)
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        let _ = std::fs::create_dir_all(&home);
        let mut cmd = Command::new("/usr/bin/kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &home)
            .env_remove("KUBECACHEDIR")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .current_dir(self.dir.path());
        cmd
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        if self.agent_lock.is_some() {
            // Containers, mounts, interfaces and nftables state go with the test.
            let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
                .args(["killall", "--data-dir"])
                .arg(self.dir.path())
                .output();
            if let Ok(o) = out
                && !o.status.success()
            {
                eprintln!("skiff killall: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}

/// Node name the agent tests register.
pub const NODE: &str = "skiff-test-node";

impl Server {
    /// A server with its embedded node agent (node [`NODE`], node IP
    /// 127.0.0.1), the busybox test image pre-loaded for air-gap import as
    /// `docker.io/library/busybox:test`; waits until the node is Ready.
    /// Agent tests run one at a time (they share the bridge).
    pub fn start_agent(extra: &[&str]) -> Server {
        let lock = agent_test_lock();
        let kubelet_port = free_port().to_string();
        let mut args: Vec<&str> = vec![
            "--node-name",
            NODE,
            "--node-ip",
            "127.0.0.1",
            "--kubelet-port",
            &kubelet_port,
        ];
        args.extend_from_slice(extra);
        let mut s = Server::start_with_prepared(&args, |dir| {
            let images = dir.join("agent").join("images");
            std::fs::create_dir_all(&images).unwrap();
            std::fs::write(images.join("busybox.tar"), busybox_archive()).unwrap();
        });
        s.agent_lock = Some(lock);
        s.wait_node_ready();
        s
    }

    pub fn wait_node_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.kubectl(&[
                "get",
                "node",
                NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.podCIDR}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.starts_with("True 10.42.") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {NODE} not ready: {text:?}\n--- server log ---\n{}",
                    log_tail(self.dir.path(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A `docker save` archive of a one-layer image made of busybox-static
/// with its applets linked, an /etc/passwd with root and nobody, and a
/// page for httpd under /www.
pub fn busybox_archive() -> Vec<u8> {
    use sha2::Digest;
    let busybox =
        std::fs::read("/bin/busybox").expect("/bin/busybox: apt-get install busybox-static");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut layer = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    for d in [
        "bin/", "etc/", "tmp/", "www/", "root/", "home/", "var/", "proc/", "sys/", "dev/",
    ] {
        let mut h = header(
            tar::EntryType::Directory,
            if d == "tmp/" { 0o1777 } else { 0o755 },
            0,
        );
        layer.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    layer
        .append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "busybox" || applet.is_empty() {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        layer
            .append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    for (path, data) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("www/index.html", "hello from skiff\n"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        layer.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer)));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["busybox:test"], "Layers": ["layer.tar"]}]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", &manifest),
        ("config.json", &config),
        ("layer.tar", &layer),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        out.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    out.into_inner().unwrap()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn spawn(dir: &Path, port: u16, kubeconfig: &Path, extra_args: &[String]) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("opening server.log");
    let log2 = log.try_clone().expect("cloning log handle");
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("server")
        .arg("--data-dir")
        .arg(dir)
        .arg("--https-listen-port")
        .arg(port.to_string())
        .args(
            if extra_args.iter().any(|a| a == "--bind-address") {
                None
            } else {
                Some(["--bind-address", "127.0.0.1"])
            }
            .into_iter()
            .flatten(),
        )
        .arg("--write-kubeconfig")
        .arg(kubeconfig)
        // Agent tests name their node; all others run the control plane only.
        .args(if extra_args.iter().any(|a| a == "--node-name") {
            None
        } else {
            Some("--disable-agent")
        })
        // Don't pick up a config file or settings from the environment.
        .arg("--config")
        .arg(dir.join("no-such-config.yaml"))
        .args(extra_args)
        .env_remove("SKIFF_TOKEN")
        .env_remove("SKIFF_DATASTORE_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .expect("spawning skiff server")
}

/// SIGKILL by PID, then reap.
pub fn kill_and_wait(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain syscall on the PID of a child we have not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = child.wait();
}

fn wait_ready(child: &mut Child, port: u16, kubeconfig: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("kubeconfig not written yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("server exited early with {status}"));
        }
        if kubeconfig.exists() {
            match readyz(port, kubeconfig) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready after {READY_TIMEOUT:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET /readyz over TLS, verifying the serving certificate against the CA in
/// the kubeconfig. /readyz is public, so no client certificate is sent.
pub fn readyz(port: u16, kubeconfig: &Path) -> Result<(), String> {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let text =
        std::fs::read_to_string(kubeconfig).map_err(|e| format!("reading kubeconfig: {e}"))?;
    let ca_b64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))
        .ok_or("kubeconfig has no certificate-authority-data")?
        .trim();
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .map_err(|e| format!("decoding CA: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| format!("parsing CA: {e:?}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("adding CA to root store: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("TLS connection: {e}"))?;
    let sock = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .map_err(|e| format!("connecting: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
    sock.set_write_timeout(Some(Duration::from_secs(2))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("sending request: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A peer that closes without close_notify still sent its answer.
            Err(_) if buf.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(e) => return Err(format!("reading response: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    if head.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "/readyz answered: {}",
            head.lines().next().unwrap_or("")
        ))
    }
}

fn log_tail(dir: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Takes the agent-test lock (as [`Server::start_agent`] does): agents share
/// the host's bridge and nftables table, so they run one at a time. Held
/// until the returned file is dropped. The lock is machine-wide (not per
/// target dir): two checkouts testing at once share the same bridge.
pub fn agent_test_lock() -> File {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/skiff-agent-tests.lock")
        .expect("lock file");
    // SAFETY: flock on an fd we own; released when the File is dropped.
    unsafe {
        libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX);
    }
    lock
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn pick_free_port() -> u16 {
    free_port()
}

/// Polls the pod until `pred` holds; panics with the pod's status and the
/// server log tail.
#[allow(dead_code)]
pub fn wait_pod(
    s: &Server,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = s.kubectl(&["get", "pod", name, "-o", "json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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

/// The pod's Ready condition is True.
#[allow(dead_code)]
pub fn pod_ready(v: &serde_json::Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The named container's status in a pod's JSON (Null when absent).
#[allow(dead_code)]
pub fn container_status<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// A `skiff agent` process with its own data dir; killed by PID and its
/// leftovers removed with `skiff killall` when dropped.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub name: String,
    pub kubelet_port: u16,
}

impl Agent {
    /// Starts `skiff agent <conn> --node-name <name> ... <extra>` with the
    /// busybox archive in its air-gap image folder.
    pub fn spawn(name: &str, conn: &[&str], extra: &[&str]) -> Agent {
        Agent::spawn_binary(None, name, conn, extra)
    }

    /// [`Agent::spawn`] running `binary` instead of the test build (a copy,
    /// so a benchmark's agent shares no pages with the server's).
    pub fn spawn_binary(binary: Option<&Path>, name: &str, conn: &[&str], extra: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("skiff-agent-")
            .tempdir()
            .expect("creating temp dir");
        let images = dir.path().join("agent").join("images");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::write(images.join("busybox.tar"), busybox_archive()).unwrap();
        let kubelet_port = pick_free_port();
        let mut cmd = agent_command(dir.path(), name, kubelet_port, conn, extra);
        if let Some(bin) = binary {
            cmd = rebase_command(&cmd, bin);
            let log = File::options()
                .append(true)
                .open(dir.path().join("agent.log"))
                .expect("opening agent.log");
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
        }
        let child = cmd.spawn().expect("spawning skiff agent");
        Agent {
            child,
            dir,
            name: name.to_string(),
            kubelet_port,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the Node is Ready with a pod CIDR; returns it.
    pub fn wait_ready(&mut self, s: &Server) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "skiff agent exited with {status}\n--- agent log ---\n{}",
                    self.log()
                );
            }
            let out = s.kubectl(&["get", "node", &self.name, "-o", "json"]);
            if out.status.success() {
                let node: Value = serde_json::from_slice(&out.stdout).unwrap();
                let cidr = node["spec"]["podCIDR"].as_str().unwrap_or("");
                if condition(&node, "Ready")["status"] == "True" && cidr.starts_with("10.42.") {
                    return node;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} not Ready\n--- agent log ---\n{}\n--- server log ---\n{}",
                    self.name,
                    self.log(),
                    s.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        // Containers, the keeper, mounts, the bridge and nftables go too.
        let _ = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["killall", "--data-dir"])
            .arg(self.dir.path())
            .output();
    }
}

pub fn agent_command(dir: &Path, name: &str, port: u16, conn: &[&str], extra: &[&str]) -> Command {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .expect("opening agent.log");
    let log2 = log.try_clone().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.arg("agent")
        .args(conn)
        .arg("--data-dir")
        .arg(dir)
        .args(["--node-name", name, "--node-ip", "127.0.0.1"])
        .args(["--kubelet-port", &port.to_string()])
        // Hermetic: no host registries.yaml.
        .arg("--private-registry")
        .arg(dir.join("no-registries.yaml"))
        .args(extra)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // Settings from the environment would override the test's.
    for (k, _) in std::env::vars() {
        if k.starts_with("SKIFF_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn join_token(s: &Server) -> String {
    std::fs::read_to_string(s.dir.path().join("server").join("token"))
        .expect("reading the server's join token")
        .trim()
        .to_string()
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// `cmd` with another program: same arguments, environment and log files.
fn rebase_command(cmd: &Command, program: &Path) -> Command {
    let mut out = Command::new(program);
    out.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    out
}
