//! The container runtime end to end: a real keeper (the built `skiff`
//! binary, `__runtime-keeper`) running busybox containers with
//! libcontainer. Needs root, cgroups and `/bin/busybox` (busybox-static).
//!
//! The runtime module has no `crate::` dependencies, so it is compiled in
//! here directly.

#[allow(dead_code)]
#[path = "../src/agent/runtime/mod.rs"]
mod runtime;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use runtime::spec::{ContainerConfig, write_bundle};
use runtime::{ContainerSpec, ContainerStatus, ExecSpec, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "head", "tr", "true", "false", "id", "ls", "stty", "tty", "grep",
    "env", "pwd", "dd", "unshare",
];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One test's world: a state dir under /tmp, a busybox rootfs, a cgroup
/// parent and a keeper. Drop removes all of it, killing by PID.
struct Env {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    cg_base: String,
    rt: Option<Runtime>,
}

impl Env {
    async fn new() -> Env {
        Self::with_keeper(Path::new(SKIFF)).await
    }

    /// As `new`, starting the keeper as `exe __runtime-keeper …`.
    async fn with_keeper(exe: &Path) -> Env {
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} missing: apt-get install busybox-static"
        );
        let dir = tempfile::Builder::new()
            .prefix("skr-")
            .tempdir_in("/tmp")
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let cg_base = format!(
            "/skiff-rt-test/{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let rt = Runtime::connect_or_spawn_with(&dir.path().join("s"), exe)
            .await
            .unwrap();
        Env {
            dir,
            rootfs,
            cg_base,
            rt: Some(rt),
        }
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().unwrap()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn cgroup(&self, id: &str) -> String {
        format!("{}/{id}", self.cg_base)
    }

    /// Writes a bundle for `args` and returns the spec to start it.
    fn spec(
        &self,
        id: &str,
        args: &[&str],
        tweak: impl FnOnce(&mut ContainerConfig),
    ) -> ContainerSpec {
        let bundle = self.dir.path().join("b").join(id);
        let mut c = ContainerConfig {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "HOME=/".into()],
            cwd: "/".into(),
            rootfs: self.rootfs.clone(),
            readonly_rootfs: true,
            cgroups_path: self.cgroup(id),
            seccomp_runtime_default: true,
            hostname: Some("ctr".into()),
            ..Default::default()
        };
        tweak(&mut c);
        write_bundle(&bundle, &c).unwrap();
        ContainerSpec {
            id: id.into(),
            bundle,
            log_path: self.dir.path().join("logs").join(format!("{id}.log")),
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{id}.log")))
            .unwrap_or_default()
    }

    async fn shutdown(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown(true).await.unwrap();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.state().join("keeper.log")).unwrap_or_default();
            eprintln!("--- keeper.log ---\n{log}");
        }
        // Best effort after a failed assertion: keeper, then anything left
        // in the test's cgroups, then the cgroups themselves.
        if let Ok(pid) = std::fs::read_to_string(self.state().join("keeper.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // Gone (reaped by the spawner's thread) before its cgroups go.
            for _ in 0..500 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let procs_root =
            PathBuf::from("/sys/fs/cgroup/pids").join(self.cg_base.trim_start_matches('/'));
        for _ in 0..50 {
            let mut any = false;
            for e in walk(&procs_root) {
                for p in std::fs::read_to_string(e.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    if let Ok(p) = p.parse::<i32>() {
                        any = true;
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        runtime::spec::remove_cgroup(&self.cg_base);
        // The shared parent only if empty (other tests may use it).
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path().join("skiff-rt-test"));
            }
        }
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

fn cgroup_exists(path: &str) -> bool {
    ["memory", "pids", "cpu", "freezer"].iter().any(|c| {
        Path::new("/sys/fs/cgroup")
            .join(c)
            .join(path.trim_start_matches('/'))
            .exists()
    })
}

async fn wait_exit(
    ev: &mut tokio::sync::broadcast::Receiver<ContainerStatus>,
    id: &str,
) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let st = tokio::time::timeout(left, ev.recv())
            .await
            .unwrap_or_else(|_| panic!("no exit event for {id}"))
            .unwrap();
        if st.id == id {
            assert!(st.exit.is_some());
            return st;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exit_codes_and_signals() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();

    let s = env.spec(
        "out",
        &[
            "sh",
            "-c",
            "echo hello; echo oops >&2; grep SigIgn /proc/self/status; hostname; exit 3",
        ],
        |_| {},
    );
    let st = rt.start(s).await.unwrap();
    assert!(st.pid > 0 && st.exit.is_none());
    let st = wait_exit(&mut ev, "out").await;
    let exit = st.exit.unwrap();
    assert_eq!(exit.code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    let log = env.log("out");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{log}");
    // SIGPIPE & co. are not ignored in the container (the keeper is Rust).
    assert!(lines.iter().any(|l| l.ends_with(" stdout F ctr")), "{log}");
    // Timestamp format: RFC 3339 with nanoseconds, UTC.
    let ts = lines[0].split(' ').next().unwrap();
    assert_eq!(ts.len(), "2016-10-06T00:17:09.669794202Z".len(), "{ts}");
    chrono::DateTime::parse_from_rfc3339(ts).unwrap();

    // No signal is ignored in the container (the keeper is a Rust program
    // and its starter may have ignored some).
    let s = env.spec("sig", &["grep", "SigIgn", "/proc/self/status"], |_| {});
    rt.start(s).await.unwrap();
    wait_exit(&mut ev, "sig").await;
    assert!(
        env.log("sig")
            .ends_with(" stdout F SigIgn:\t0000000000000000\n"),
        "{}",
        env.log("sig")
    );
    rt.remove("sig").await.unwrap();
    let s = env.spec("ok", &["true"], |_| {});
    rt.start(s).await.unwrap();
    assert_eq!(wait_exit(&mut ev, "ok").await.exit.unwrap().code, 0);

    let s = env.spec("sleeper", &["sleep", "1000"], |_| {});
    let st = rt.start(s).await.unwrap();
    assert!(Path::new(&format!("/proc/{}", st.pid)).exists());
    assert!(cgroup_exists(&env.cgroup("sleeper")));
    let t = Instant::now();
    rt.signal("sleeper", libc::SIGKILL).await.unwrap();
    let st = wait_exit(&mut ev, "sleeper").await;
    let lat = t.elapsed();
    let exit = st.exit.unwrap();
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    eprintln!("signal → exit event: {lat:?}");
    assert!(lat < Duration::from_millis(500), "{lat:?}");

    let l = rt.list().await.unwrap();
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|c| c.exit.is_some()));
    for id in ["out", "ok", "sleeper"] {
        rt.remove(id).await.unwrap();
        assert!(!cgroup_exists(&env.cgroup(id)), "cgroup of {id} left");
        assert!(!env.state().join("c").join(id).exists());
    }
    assert!(rt.list().await.unwrap().is_empty());
    // Removing twice is fine.
    rt.remove("ok").await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_command_is_a_clear_error() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let s = env.spec("nocmd", &["nosuch"], |_| {});
    let err = rt.start(s).await.unwrap_err().to_string();
    assert_eq!(err, "exec: \"nosuch\": executable file not found in $PATH");
    assert!(!cgroup_exists(&env.cgroup("nocmd")), "cgroup left behind");
    assert!(
        !env.state().join("c/nocmd").exists(),
        "state dir left behind"
    );
    assert!(rt.list().await.unwrap().is_empty());
    // No stray child of the keeper (zombie or blocked init).
    let kp = rt.keeper_pid().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{kp}/task/{kp}/children")).unwrap();
    assert_eq!(children.trim(), "", "keeper children: {children}");
    // The same id can be used again.
    let s = env.spec("nocmd", &["true"], |_| {});
    rt.start(s).await.unwrap();
    rt.remove("nocmd").await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();
    let s = env.spec(
        "oom",
        &[
            "sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ],
        |c| c.memory_limit = Some(16 << 20),
    );
    rt.start(s).await.unwrap();
    let exit = wait_exit(&mut ev, "oom").await.exit.unwrap();
    assert!(exit.oom_killed, "{exit:?} log: {}", env.log("oom"));
    rt.remove("oom").await.unwrap();
    env.shutdown().await;
}

async fn read_all(r: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>) -> String {
    let mut s = String::new();
    r.unwrap().read_to_string(&mut s).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_stdin_tty() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let s = env.spec("box", &["sleep", "1000"], |c| {
        c.uid = 1000;
        c.gid = 1000;
        c.cwd = "/tmp".into();
        c.env.push("GREETING=hi".into());
    });
    rt.start(s).await.unwrap();

    // Output, exit code, and the container's user, cwd and env.
    let t = Instant::now();
    let mut sess = rt
        .exec(
            "box",
            ExecSpec {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out $(id -u) $(pwd) $GREETING; echo err >&2; exit 5".into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eprintln!("exec started in {:?}", t.elapsed());
    assert!(sess.stdin.is_none());
    let (out, err) = tokio::join!(read_all(sess.stdout.take()), read_all(sess.stderr.take()));
    assert_eq!(out, "out 1000 /tmp hi\n");
    assert_eq!(err, "err\n");
    assert_eq!(sess.exit.await.unwrap(), 5);

    // stdin: cat echoes it back and exits at EOF.
    let mut sess = rt
        .exec(
            "box",
            ExecSpec {
                args: vec!["cat".into()],
                stdin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut w = sess.stdin.take().unwrap();
    w.write_all(b"abc\nxyz\n").await.unwrap();
    drop(w);
    assert_eq!(read_all(sess.stdout.take()).await, "abc\nxyz\n");
    assert_eq!(sess.exit.await.unwrap(), 0);

    // A command that is not there.
    let err = rt
        .exec(
            "box",
            ExecSpec {
                args: vec!["nosuch".into()],
                ..Default::default()
            },
        )
        .await
        .err()
        .expect("exec of a missing command fails");
    eprintln!("exec nosuch: {err:#}");
    assert!(err.to_string().contains("nosuch"), "{err:#}");

    // tty with resize.
    let mut sess = rt
        .exec(
            "box",
            ExecSpec {
                args: vec!["sh".into(), "-c".into(), "sleep 0.3; stty size; tty".into()],
                tty: true,
                stdin: false,
            },
        )
        .await
        .unwrap();
    assert!(sess.stderr.is_none());
    (sess.resize.as_ref().unwrap())(100, 30);
    let out = read_all(sess.stdout.take()).await;
    assert!(out.contains("30 100"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert_eq!(sess.exit.await.unwrap(), 0);

    rt.remove("box").await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_attach_and_tty_container() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();
    let mut s = env.spec("cat", &["cat"], |_| {});
    s.stdin = true;
    s.stdin_once = true;
    rt.start(s).await.unwrap();
    let mut w = rt.attach_stdin("cat").await.unwrap();
    w.write_all(b"line one\n").await.unwrap();
    drop(w);
    let exit = wait_exit(&mut ev, "cat").await.exit.unwrap();
    assert_eq!(exit.code, 0);
    assert!(
        env.log("cat").contains(" stdout F line one\n"),
        "{}",
        env.log("cat")
    );
    // Without stdin there is nothing to attach to.
    let s = env.spec("nostdin", &["sleep", "100"], |_| {});
    rt.start(s).await.unwrap();
    assert!(rt.attach_stdin("nostdin").await.is_err());

    let mut s = env.spec("tty", &["sh", "-c", "tty; echo hi"], |c| c.tty = true);
    s.tty = true;
    rt.start(s).await.unwrap();
    assert_eq!(wait_exit(&mut ev, "tty").await.exit.unwrap().code, 0);
    let log = env.log("tty");
    assert!(log.contains(" stdout F /dev/"), "{log}");
    assert!(log.contains(" stdout F hi\n"), "{log}");
    for id in ["cat", "nostdin", "tty"] {
        rt.remove(id).await.unwrap();
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_survives_the_agent() {
    let mut env = Env::new().await;
    let s = env.spec("long", &["sleep", "1000"], |_| {});
    let st = env.rt().start(s).await.unwrap();
    let kpid = env.rt().keeper_pid().unwrap();
    // The agent goes away (its Runtime and event task).
    env.rt = None;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rt = Runtime::connect_or_spawn_with(&env.state(), Path::new(SKIFF))
        .await
        .unwrap();
    assert_eq!(rt.keeper_pid(), Some(kpid), "a second keeper was started");
    let l = rt.list().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].pid, st.pid);
    assert_eq!(l[0].started_at, st.started_at);
    assert!(l[0].exit.is_none());
    assert!(Path::new(&format!("/proc/{}", st.pid)).exists());
    // Exits are still delivered to the new subscriber.
    let mut ev = rt.subscribe();
    // `sleep` as pid 1 has no SIGTERM handler: the kernel drops the signal.
    rt.signal("long", libc::SIGTERM).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ev.recv())
            .await
            .is_err()
    );
    rt.signal("long", libc::SIGKILL).await.unwrap();
    let exit = wait_exit(&mut ev, "long").await.exit.unwrap();
    assert_eq!(exit.code, 137);
    rt.remove("long").await.unwrap();
    env.rt = Some(rt);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_starts() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();
    let specs: Vec<ContainerSpec> = (0..20)
        .map(|i| env.spec(&format!("c{i}"), &["sh", "-c", "echo started"], |_| {}))
        .collect();
    let t = Instant::now();
    let handles: Vec<_> = specs
        .into_iter()
        .map(|s| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.start(s).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    eprintln!("20 concurrent starts: {:?}", t.elapsed());
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20 {
        let st = tokio::time::timeout(Duration::from_secs(30), ev.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.exit.as_ref().unwrap().code, 0, "{st:?}");
        seen.insert(st.id);
    }
    for i in 0..20 {
        assert!(env.log(&format!("c{i}")).contains(" stdout F started"));
    }
    // shutdown(true) removes them all.
    env.shutdown().await;
    for i in 0..20 {
        assert!(!cgroup_exists(&env.cgroup(&format!("c{i}"))));
    }
    assert!(!env.state().join("keeper.sock").exists());
}

/// Per-container create+start as the agent sees it (one request round trip
/// to the keeper), p50 over 50 sequential starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_latency() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();
    let mut times = Vec::new();
    for i in 0..50 {
        let id = format!("l{i}");
        let s = env.spec(&id, &["true"], |_| {});
        let t = Instant::now();
        rt.start(s).await.unwrap();
        times.push(t.elapsed());
        wait_exit(&mut ev, &id).await;
        rt.remove(&id).await.unwrap();
    }
    times.sort();
    eprintln!(
        "start p50 {:?} p90 {:?} max {:?}",
        times[25], times[45], times[49]
    );
    env.shutdown().await;
}

/// RuntimeDefault seccomp is enforced: `unshare(CLONE_NEWUSER)` needs no
/// capability, so only the filter stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_runtime_default() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();
    for (id, seccomp) in [("filtered", true), ("unconfined", false)] {
        let s = env.spec(id, &["unshare", "-U", "true"], |c| {
            c.seccomp_runtime_default = seccomp
        });
        rt.start(s).await.unwrap();
        let code = wait_exit(&mut ev, id).await.exit.unwrap().code;
        assert_eq!(
            code == 0,
            !seccomp,
            "{id}: exit {code}, log {}",
            env.log(id)
        );
        rt.remove(id).await.unwrap();
    }
    env.shutdown().await;
}

/// Output and exit code of `sh -c script` exec'd in container `id`.
async fn exec_sh(rt: &Runtime, id: &str, script: &str) -> (String, i32) {
    let mut sess = rt
        .exec(
            id,
            ExecSpec {
                args: vec!["sh".into(), "-c".into(), script.into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (out, err) = tokio::join!(read_all(sess.stdout.take()), read_all(sess.stderr.take()));
    (out + &err, sess.exit.await.unwrap())
}

/// The `Field:\tvalue` line of a /proc status text.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
}

/// A process exec'd into a filtered container is filtered too (as runc
/// does), and ends up with exactly the container's capabilities: as root
/// (full effective set) and as a non-root user without no_new_privs, where
/// installing the filter needs a capability the process must not keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gets_the_container_seccomp_filter() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    for (id, uid) in [("root", 0), ("user", 1000)] {
        let s = env.spec(id, &["sleep", "1000"], |c| {
            c.uid = uid;
            c.gid = uid;
        });
        rt.start(s).await.unwrap();
        let (out, code) = exec_sh(&rt, id, "unshare -U true").await;
        assert_ne!(code, 0, "{id}: unshare ran unfiltered: {out}");
        assert!(out.contains("Operation not permitted"), "{id}: {out}");
        let (own, code) = exec_sh(&rt, id, "cat /proc/self/status").await;
        assert_eq!(code, 0, "{own}");
        let (init, _) = exec_sh(&rt, id, "cat /proc/1/status").await;
        assert_eq!(status_field(&own, "Seccomp"), "2", "{id}: {own}");
        assert_eq!(
            status_field(&own, "Uid").split_whitespace().next(),
            Some(&*uid.to_string())
        );
        for field in [
            "CapBnd",
            "CapEff",
            "CapPrm",
            "CapInh",
            "CapAmb",
            "NoNewPrivs",
        ] {
            assert_eq!(
                status_field(&own, field),
                status_field(&init, field),
                "{id}: {field} of the exec'd process differs from the container's"
            );
        }
    }
    // Unconfined containers exec unconfined processes.
    let s = env.spec("unconfined", &["sleep", "1000"], |c| {
        c.seccomp_runtime_default = false
    });
    rt.start(s).await.unwrap();
    let (out, code) = exec_sh(&rt, "unconfined", "unshare -U true").await;
    assert_eq!(code, 0, "{out}");
    env.shutdown().await;
}

/// The pids the keeper holds pidfds for (from its fdinfo).
fn keeper_pidfds(keeper: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:[pidfd]" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{keeper}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(pid) = info.lines().find_map(|l| l.strip_prefix("Pid:")) {
            pids.push(pid.trim().parse().unwrap());
        }
    }
    pids.sort();
    pids
}

/// The keeper watches and reaps container inits and exec processes through
/// pidfds: one per live process, closed once its exit is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_are_reaped_through_pidfds() {
    let mut env = Env::new().await;
    let rt = env.rt().clone();
    let keeper = rt.keeper_pid().unwrap();
    let mut ev = rt.subscribe();
    let a = rt
        .start(env.spec("a", &["sleep", "1000"], |_| {}))
        .await
        .unwrap();
    let b = rt
        .start(env.spec("b", &["sleep", "1000"], |_| {}))
        .await
        .unwrap();
    let mut sess = rt
        .exec(
            "a",
            ExecSpec {
                args: vec!["cat".into()],
                stdin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let held = keeper_pidfds(keeper);
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held.contains(&a.pid) && held.contains(&b.pid), "{held:?}");
    let exec_pid = *held.iter().find(|p| ![a.pid, b.pid].contains(p)).unwrap();

    // b's init is killed: its exit is reported, its pidfd closed.
    rt.signal("b", libc::SIGKILL).await.unwrap();
    let exit = wait_exit(&mut ev, "b").await.exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal),
        (128 + libc::SIGKILL, Some(libc::SIGKILL))
    );
    let mut want = vec![a.pid, exec_pid];
    want.sort();
    assert_eq!(keeper_pidfds(keeper), want);
    // The exec ends at stdin EOF with its status.
    drop(sess.stdin.take());
    assert_eq!(sess.exit.await.unwrap(), 0);
    assert_eq!(keeper_pidfds(keeper), vec![a.pid]);
    // Nothing is left a zombie.
    for pid in [b.pid, exec_pid] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} not reaped"
        );
    }
    env.shutdown().await;
}

/// A keeper that died (SIGKILL) leaves containers nobody reaps or logs:
/// the next keeper kills and deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keeper_cleans_up_after_a_dead_one() {
    let mut env = Env::new().await;
    let s = env.spec("orphan", &["sleep", "1000"], |_| {});
    let st = env.rt().start(s).await.unwrap();
    let kpid = env.rt().keeper_pid().unwrap();
    env.rt = None;
    unsafe { libc::kill(kpid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{kpid}")).exists() {
        assert!(Instant::now() < deadline, "keeper did not die");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rt = Runtime::connect_or_spawn_with(&env.state(), Path::new(SKIFF))
        .await
        .unwrap();
    assert_ne!(rt.keeper_pid(), Some(kpid));
    assert!(rt.list().await.unwrap().is_empty());
    assert!(!cgroup_exists(&env.cgroup("orphan")));
    assert!(!env.state().join("c/orphan").exists());
    // The orphaned init is dead (at most a zombie of whoever adopted it).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", st.pid)).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    env.rt = Some(rt);
    env.shutdown().await;
}

/// cgroup v2, as far as this machine allows. Its cgroups are v1 hybrid:
/// memory, cpu and pids are bound to v1 hierarchies, and the v2 hierarchy
/// (`/sys/fs/cgroup/unified`) offers only hugetlb. A keeper whose mount
/// namespace has that v2 hierarchy at /sys/fs/cgroup sees a pure v2 host:
/// libcontainer's v2 manager creates the container cgroups, and the keeper's
/// own v2 paths (kill, OOM check, removal) run. Limits cannot be tested
/// here (no memory or cpu controller in v2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_under_cgroup_v2() {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if !unified.join("cgroup.procs").exists() {
        // A pure v2 host runs every other test here on v2 already.
        eprintln!(
            "no hybrid v2 hierarchy at {}: nothing extra to test",
            unified.display()
        );
        return;
    }
    let wrapper = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    std::fs::write(
        wrapper.path(),
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private sh -c \
             'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" \"$@\"' {SKIFF} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        wrapper.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let wrapper_path = wrapper.into_temp_path();
    let mut env = Env::with_keeper(&wrapper_path).await;
    let rt = env.rt().clone();
    let mut ev = rt.subscribe();
    let a = rt
        .start(env.spec("a", &["sleep", "1000"], |_| {}))
        .await
        .unwrap();
    let cg = env.cgroup("a");
    let dir = unified.join(cg.trim_start_matches('/'));
    // The container's init is in its v2 cgroup (and in no v1 one).
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), a.pid.to_string());
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", a.pid)).unwrap();
    assert!(own.contains(&format!("0::{cg}")), "{own}");
    assert!(
        !Path::new("/sys/fs/cgroup/memory")
            .join(cg.trim_start_matches('/'))
            .exists()
    );
    // An exec'd process joins it.
    let (out, code) = exec_sh(&rt, "a", "cat /proc/self/cgroup").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("0::{cg}")), "{out}");
    // Exit status, then removal leaves no v2 cgroup.
    rt.signal("a", libc::SIGKILL).await.unwrap();
    let exit = wait_exit(&mut ev, "a").await.exit.unwrap();
    assert_eq!(exit.code, 137);
    assert!(!exit.oom_killed);
    rt.remove("a").await.unwrap();
    assert!(!dir.exists(), "{} left", dir.display());
    env.shutdown().await;
}
