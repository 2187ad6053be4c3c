//! The runtime keeper: one single-threaded process per node that owns every
//! container. libcontainer forks with raw clone3 and changes the process
//! cwd, so it only runs here, never on the agent's tokio threads. The
//! keeper is the parent of every container init and exec process, reaps
//! them, owns their output pipes (CRI logs) and outlives agent restarts.
//!
//! Everything is one `poll(2)` loop: the listening socket, clients, output
//! pipes, a pidfd per container init and exec process (reaped through it
//! with `waitid(P_PIDFD)`), and a SIGCHLD self-pipe for libcontainer's
//! short-lived helpers. Only libcontainer calls block (a few ms).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, listen, socket,
};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use super::logs::{CriLog, LineSplitter, Rotation};
use super::proto::{self, Request, Response};
use super::{ContainerSpec, ContainerStatus, ExecSpec, ExitStatus, spec};

/// Write end of the SIGCHLD self-pipe (the handler may only touch atomics).
static SIGCHLD_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 1u8;
        // Async-signal-safe; a full pipe already means "wake up".
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn set_nonblocking(fd: RawFd) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn dup_fd(fd: RawFd) -> Result<OwnedFd> {
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("dup");
    }
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn dev_null() -> Result<OwnedFd> {
    Ok(File::open("/dev/null")?.into())
}

/// Installs a container's seccomp filter in a process it execs, as runc
/// does: libcontainer 0.7's tenant builder rebuilds `linux` without
/// `seccomp`, so the exec'd process would otherwise run unfiltered.
///
/// libcontainer calls the executor last, after it has dropped capabilities.
/// Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, so the
/// process is started with CAP_SYS_ADMIN and CAP_SETPCAP added; the executor
/// installs the filter, then drops to the container's own capability sets
/// before `execve`. The filter allows `prctl` and `capset`, so the drop
/// still works once it is in place.
#[derive(Clone)]
struct ExecSeccomp {
    seccomp: libcontainer::oci_spec::runtime::LinuxSeccomp,
    caps: libcontainer::oci_spec::runtime::LinuxCapabilities,
}

impl ExecSeccomp {
    const EXTRA: [&str; 2] = ["CAP_SYS_ADMIN", "CAP_SETPCAP"];

    /// Reads the filter and the process's own capabilities from the
    /// container's config, and widens `process`'s sets for the install.
    fn prepare(seccomp: &serde_json::Value, process: &mut serde_json::Value) -> Result<Self> {
        let seccomp = serde_json::from_value(seccomp.clone()).context("container seccomp")?;
        let caps = serde_json::from_value(process["capabilities"].clone())
            .context("container capabilities")?;
        for set in ["bounding", "effective", "permitted"] {
            let list = &mut process["capabilities"][set];
            if !list.is_array() {
                *list = serde_json::json!([]);
            }
            let list = list.as_array_mut().expect("an array");
            for cap in Self::EXTRA {
                if !list.iter().any(|c| c == cap) {
                    list.push(cap.into());
                }
            }
        }
        Ok(ExecSeccomp { seccomp, caps })
    }
}

impl libcontainer::workload::Executor for ExecSeccomp {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        // Fails closed: an error here ends the process before its command.
        libcontainer::seccomp::initialize_seccomp(&self.seccomp)
            .map_err(|e| ExecutorError::Other(format!("install seccomp filter: {e}")))?;
        let syscall = libcontainer::syscall::syscall::create_syscall();
        libcontainer::capabilities::drop_privileges(&self.caps, syscall.as_ref())
            .map_err(|e| ExecutorError::Other(format!("drop capabilities: {e}")))?;
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// libcontainer writes `process.oomScoreAdj` into the *calling* process
/// (children inherit it); the keeper puts its own value back afterwards.
struct OomAdjGuard(Option<String>);

impl OomAdjGuard {
    fn save() -> OomAdjGuard {
        OomAdjGuard(std::fs::read_to_string("/proc/self/oom_score_adj").ok())
    }
}

impl Drop for OomAdjGuard {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write("/proc/self/oom_score_adj", v.trim());
        }
    }
}

/// A libcontainer error as one line, the exec-not-found case worded as
/// upstream runtimes do (the kubelet shows it in the container status).
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    let all = parts.join(": ");
    if let Some(i) = all.find("executable '") {
        let rest = &all[i + "executable '".len()..];
        if let Some(j) = rest.find("' not found in $PATH") {
            return format!(
                "exec: \"{}\": executable file not found in $PATH",
                &rest[..j]
            );
        }
    }
    all
}

struct Client {
    fd: OwnedFd,
    outq: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    subscriber: bool,
    dead: bool,
}

struct Out {
    fd: OwnedFd,
    stream: &'static str,
    split: LineSplitter,
}

struct Ctr {
    spec: ContainerSpec,
    status: ContainerStatus,
    cgroups_path: String,
    container: Container,
    log: CriLog,
    outs: Vec<Out>,
    /// Writer to the container's stdin (pipe, or the pty master with tty).
    stdin: Option<OwnedFd>,
}

impl Ctr {
    /// Reads what the container has written so far (all of it at exit).
    fn pump(&mut self, idx: usize, budget: usize) -> bool {
        let mut buf = [0u8; 65536];
        let out = &mut self.outs[idx];
        for _ in 0..budget {
            let n = unsafe { libc::read(out.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                out.split
                    .feed(&buf[..n as usize], out.stream, &mut self.log);
                continue;
            }
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return true,
                    Some(libc::EINTR) => continue,
                    // EIO: the pty's last slave closed.
                    _ => {}
                }
            }
            out.split.finish(out.stream, &mut self.log);
            return false;
        }
        true
    }

    fn drain_all(&mut self) {
        let mut i = 0;
        while i < self.outs.len() {
            if self.pump(i, usize::MAX) {
                i += 1;
            } else {
                self.outs.remove(i);
            }
        }
    }
}

struct Keeper {
    root: PathBuf,
    console_path: PathBuf,
    exec_dir: PathBuf,
    listener: OwnedFd,
    console: OwnedFd,
    sig_r: OwnedFd,
    clients: HashMap<u64, Client>,
    next_client: u64,
    ctrs: BTreeMap<String, Ctr>,
    /// Exec pid → the client waiting for its exit code.
    execs: HashMap<i32, Option<u64>>,
    /// A pidfd for every container init and exec process still unreaped:
    /// each one's exit wakes the poll loop and is reaped through it.
    pidfds: HashMap<i32, OwnedFd>,
    next_exec: u64,
    rotation: Rotation,
    exiting: Option<Instant>,
}

/// The keeper's entry point (see `keeper_main`).
pub fn run(state_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let state_dir = std::fs::canonicalize(state_dir)?;
    // Own log: tracing is not initialised here; stderr goes to the file.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("keeper.log"))?;
    unsafe {
        libc::dup2(log.as_raw_fd(), 2);
    }
    drop(log);
    // libcontainer reports the cause of a failure through tracing only.
    let filter =
        std::env::var("SKIFF_KEEPER_LOG").unwrap_or_else(|_| "warn,libcgroups=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    // libcontainer chdirs back and forth; start from a directory that
    // cannot disappear.
    std::env::set_current_dir("/")?;

    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("keeper.lock"))?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "{} keeper: another keeper holds the lock, exiting",
            now_rfc3339()
        );
        return Ok(());
    }
    std::fs::write(state_dir.join("keeper.pid"), std::process::id().to_string())?;
    // Ignored signals survive clone and exec: Rust ignores SIGPIPE before
    // main, and whoever started the agent may have ignored others.
    // Containers (cloned from here) must start with the defaults.
    reset_ignored_signals();
    let sock_path = state_dir.join("keeper.sock");
    let console_path = state_dir.join("console.sock");
    if sock_path.as_os_str().len() >= 100 {
        bail!(
            "state dir path too long for a unix socket: {}",
            state_dir.display()
        );
    }
    let root = state_dir.join("c");
    let exec_dir = state_dir.join("x");
    std::fs::create_dir_all(&root)?;
    let _ = std::fs::remove_dir_all(&exec_dir);
    std::fs::create_dir_all(&exec_dir)?;
    cleanup_leftovers(&root);

    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&console_path);
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(listener.as_raw_fd(), &UnixAddr::new(&sock_path)?)?;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))?;
    listen(&listener, Backlog::new(1024)?)?;
    // libcontainer connects a stream socket here and sends the pty master.
    let console = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(console.as_raw_fd(), &UnixAddr::new(&console_path)?)?;
    std::fs::set_permissions(&console_path, std::fs::Permissions::from_mode(0o600))?;
    listen(&console, Backlog::new(64)?)?;

    let (sig_r, sig_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    SIGCHLD_FD.store(sig_w.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(sig_w);
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as *const () as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
    }
    eprintln!(
        "{} keeper: pid {} serving {}",
        now_rfc3339(),
        std::process::id(),
        sock_path.display()
    );

    let mut k = Keeper {
        root,
        console_path: console_path.clone(),
        exec_dir,
        listener,
        console,
        sig_r,
        clients: HashMap::new(),
        next_client: 0,
        ctrs: BTreeMap::new(),
        execs: HashMap::new(),
        pidfds: HashMap::new(),
        next_exec: 0,
        rotation: Rotation::from_env(),
        exiting: None,
    };
    k.run_loop();
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&console_path);
    eprintln!("{} keeper: exiting", now_rfc3339());
    let _ = std::fs::remove_file(state_dir.join("keeper.pid"));
    drop(lock);
    Ok(())
}

/// The kernel's `struct sigaction` (glibc refuses signals 32 and 33, its
/// own, so the syscall is made directly).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

fn reset_ignored_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        unsafe {
            if libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            ) == 0
                && old.handler == libc::SIG_IGN
            {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
}

/// Containers left by a keeper that died: nobody reaps them or reads their
/// output any more, so they are killed and deleted (the kubelet restarts).
fn cleanup_leftovers(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        eprintln!(
            "{} keeper: removing leftover {}",
            now_rfc3339(),
            dir.display()
        );
        if let Ok(mut c) = Container::load(dir.clone()) {
            let _ = c.kill(Signal::try_from(libc::SIGKILL).expect("SIGKILL"), true);
            std::thread::sleep(Duration::from_millis(20));
            let _ = c.delete(true);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Kills whatever runs in cgroup `path` and removes it (failed starts).
fn kill_cgroup(path: &str) {
    if path.trim_matches('/').is_empty() {
        return;
    }
    let rel = path.trim_start_matches('/');
    let procs = if spec::cgroup_v2() {
        Path::new("/sys/fs/cgroup").join(rel).join("cgroup.procs")
    } else {
        ["pids", "memory", "freezer", "cpu"]
            .iter()
            .map(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(rel)
                    .join("cgroup.procs")
            })
            .find(|p| p.exists())
            .unwrap_or_default()
    };
    for _ in 0..100 {
        let pids: Vec<i32> = std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            unsafe { libc::kill(p, libc::SIGKILL) };
            let _ = waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    spec::remove_cgroup(path);
}

/// A pidfd for `pid` (readable once it has exited). Opened while the
/// process is our unreaped child, so the pid cannot have been reused.
fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("pidfd_open {pid}"));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits (bounded) for a killed child.
fn reap_pid(pid: i32, timeout: Duration) -> Option<WaitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(s) => return Some(s),
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn exit_of(ws: WaitStatus) -> Option<(i32, i32, Option<i32>)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code, None)),
        WaitStatus::Signaled(pid, sig, _) => {
            Some((pid.as_raw(), 128 + sig as i32, Some(sig as i32)))
        }
        _ => None,
    }
}

enum Token {
    Listener,
    Sig,
    Exited(i32),
    Client(u64),
    Out(String, usize),
}

impl Keeper {
    fn run_loop(&mut self) {
        loop {
            if let Some(t) = self.exiting {
                let flushed = self.clients.values().all(|c| c.outq.is_empty() || c.dead);
                if flushed || t.elapsed() > Duration::from_secs(2) {
                    return;
                }
            }
            let mut tokens = Vec::new();
            let mut pfds = Vec::new();
            let mut add = |t: Token, fd: RawFd, ev: libc::c_short| {
                tokens.push(t);
                pfds.push(libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                });
            };
            add(Token::Sig, self.sig_r.as_raw_fd(), libc::POLLIN);
            if self.exiting.is_none() {
                add(Token::Listener, self.listener.as_raw_fd(), libc::POLLIN);
            }
            for (id, c) in &self.clients {
                let mut ev = libc::POLLIN;
                if !c.outq.is_empty() {
                    ev |= libc::POLLOUT;
                }
                add(Token::Client(*id), c.fd.as_raw_fd(), ev);
            }
            for (pid, fd) in &self.pidfds {
                add(Token::Exited(*pid), fd.as_raw_fd(), libc::POLLIN);
            }
            for (id, c) in &self.ctrs {
                for (i, o) in c.outs.iter().enumerate() {
                    add(Token::Out(id.clone(), i), o.fd.as_raw_fd(), libc::POLLIN);
                }
            }
            let timeout = if self.exiting.is_some() { 50 } else { 1000 };
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    eprintln!("{} keeper: poll: {e}", now_rfc3339());
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // Output first, so an exit found below is logged after it.
            let mut eof: Vec<(String, usize)> = Vec::new();
            for (t, p) in tokens.iter().zip(&pfds) {
                if p.revents == 0 {
                    continue;
                }
                if let Token::Out(id, i) = t
                    && let Some(c) = self.ctrs.get_mut(id)
                    && !c.pump(*i, 16)
                {
                    eof.push((id.clone(), *i));
                }
            }
            // Remove closed streams highest index first.
            eof.sort_by_key(|e| std::cmp::Reverse(e.1));
            for (id, i) in eof {
                if let Some(c) = self.ctrs.get_mut(&id) {
                    c.outs.remove(i);
                }
            }
            for (t, p) in tokens.iter().zip(&pfds) {
                if p.revents == 0 {
                    continue;
                }
                match t {
                    Token::Sig => {
                        let mut b = [0u8; 256];
                        while unsafe {
                            libc::read(self.sig_r.as_raw_fd(), b.as_mut_ptr().cast(), b.len())
                        } > 0
                        {}
                    }
                    Token::Listener => self.accept(),
                    Token::Client(id) => {
                        if p.revents & libc::POLLOUT != 0 {
                            self.flush(*id);
                        }
                        if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                            self.read_client(*id);
                        }
                    }
                    Token::Exited(pid) => self.reap_pidfd(*pid),
                    Token::Out(..) => {}
                }
            }
            // Children without a pidfd (libcontainer's helpers); also on
            // timeout: a SIGCHLD lost to a full pipe is harmless.
            self.reap();
            self.clients.retain(|_, c| !c.dead);
        }
    }

    fn accept(&mut self) {
        loop {
            match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(fd) => {
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    // Large `List` replies must fit in one record.
                    let sz: libc::c_int = 8 << 20;
                    unsafe {
                        libc::setsockopt(
                            fd.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_SNDBUFFORCE,
                            (&sz as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        );
                    }
                    self.next_client += 1;
                    self.clients.insert(
                        self.next_client,
                        Client {
                            fd,
                            outq: VecDeque::new(),
                            subscriber: false,
                            dead: false,
                        },
                    );
                }
                Err(_) => return,
            }
        }
    }

    fn push(&mut self, client: u64, resp: &Response, fds: Vec<OwnedFd>) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let data = serde_json::to_vec(resp).expect("response serializes");
        c.outq.push_back((data, fds));
        // A subscriber that stopped reading is cut off, not buffered forever.
        if c.outq.len() > 100_000 {
            c.dead = true;
            c.outq.clear();
            return;
        }
        self.flush(client);
    }

    fn flush(&mut self, client: u64) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        while let Some((data, fds)) = c.outq.front() {
            let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
            match proto::send(c.fd.as_raw_fd(), data, &raw) {
                Ok(()) => {
                    c.outq.pop_front();
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return,
                Err(_) => {
                    c.dead = true;
                    c.outq.clear();
                    return;
                }
            }
        }
    }

    fn read_client(&mut self, id: u64) {
        for _ in 0..16 {
            let Some(c) = self.clients.get_mut(&id) else {
                return;
            };
            if c.dead {
                return;
            }
            match proto::recv(c.fd.as_raw_fd()) {
                Ok(Some((data, _fds))) => match serde_json::from_slice::<Request>(&data) {
                    Ok(req) => self.handle(id, req),
                    Err(e) => self.push(id, &Response::Err(format!("bad request: {e}")), vec![]),
                },
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return,
                Ok(None) | Err(_) => {
                    c.dead = true;
                    // Exec exits are reaped regardless; nobody to tell.
                    for w in self.execs.values_mut() {
                        if *w == Some(id) {
                            *w = None;
                        }
                    }
                    return;
                }
            }
        }
    }

    fn handle(&mut self, client: u64, req: Request) {
        let reply = |r: Result<Response>| match r {
            Ok(r) => r,
            Err(e) => Response::Err(format!("{e:#}")),
        };
        match req {
            Request::Start(spec) => {
                let r = reply(self.start(spec).map(Response::Status));
                self.push(client, &r, vec![]);
            }
            Request::Signal { id, signal } => {
                let r = reply(self.signal(&id, signal).map(|_| Response::Ok));
                self.push(client, &r, vec![]);
            }
            Request::Remove { id } => {
                let r = reply(self.remove(&id).map(|_| Response::Ok));
                self.push(client, &r, vec![]);
            }
            Request::List => {
                let l = self.ctrs.values().map(|c| c.status.clone()).collect();
                self.push(client, &Response::List(l), vec![]);
            }
            Request::Subscribe => {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.subscriber = true;
                }
                self.push(client, &Response::Ok, vec![]);
            }
            Request::Exec { id, spec } => match self.exec(client, &id, &spec) {
                Ok((pid, fds)) => self.push(client, &Response::Exec { pid }, fds),
                Err(e) => self.push(client, &Response::Err(format!("{e:#}")), vec![]),
            },
            Request::AttachStdin { id } => match self.attach_stdin(&id) {
                Ok(fd) => self.push(client, &Response::Stdin, vec![fd]),
                Err(e) => self.push(client, &Response::Err(format!("{e:#}")), vec![]),
            },
            Request::Shutdown { kill } => {
                if kill {
                    let ids: Vec<String> = self.ctrs.keys().cloned().collect();
                    for id in ids {
                        if let Err(e) = self.remove(&id) {
                            eprintln!("{} keeper: remove {id}: {e:#}", now_rfc3339());
                        }
                    }
                }
                self.exiting = Some(Instant::now());
                self.push(client, &Response::Ok, vec![]);
            }
        }
    }

    /// Drops pending console connections (left by a failed tty start).
    fn drain_console(&self) {
        while let Ok(fd) = accept4(self.console.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            unsafe { libc::close(fd) };
        }
    }

    /// The pty master libcontainer's init sent to the console socket.
    fn recv_console(&self) -> Result<OwnedFd> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let conn = loop {
            match accept4(self.console.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => break unsafe { OwnedFd::from_raw_fd(fd) },
                Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => bail!("console socket: no connection: {e}"),
            }
        };
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        unsafe {
            libc::setsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
                && let Some(&fd) = fds.first()
            {
                for &extra in &fds[1..] {
                    unsafe { libc::close(extra) };
                }
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        bail!("console socket: no pty master received")
    }

    fn start(&mut self, mut spec: ContainerSpec) -> Result<ContainerStatus> {
        if self.ctrs.contains_key(&spec.id) {
            bail!("container {} already exists", spec.id);
        }
        let cfg_path = spec.bundle.join("config.json");
        let cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&cfg_path).with_context(|| format!("read {}", cfg_path.display()))?,
        )
        .with_context(|| format!("parse {}", cfg_path.display()))?;
        let cgroups_path = cfg["linux"]["cgroupsPath"]
            .as_str()
            .filter(|s| s.starts_with('/'))
            .ok_or_else(|| anyhow!("config.json needs an absolute linux.cgroupsPath"))?
            .to_string();
        // config.json decides: libcontainer refuses a console socket
        // without `terminal` and needs one with it.
        let tty = cfg["process"]["terminal"].as_bool().unwrap_or(false);
        spec.tty = tty;
        let log = CriLog::open(&spec.log_path, &self.rotation)
            .with_context(|| format!("open log {}", spec.log_path.display()))?;

        let mut builder = ContainerBuilder::new(spec.id.clone(), SyscallType::default())
            .with_root_path(&self.root)?
            .validate_id()?;
        let mut outs = Vec::new();
        let mut stdin = None;
        if tty {
            self.drain_console();
            builder = builder.with_console_socket(Some(&self.console_path));
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            builder = builder.with_stdout(out_w).with_stderr(err_w);
            if spec.stdin {
                let (in_r, in_w) = pipe()?;
                builder = builder.with_stdin(in_r);
                stdin = Some(in_w);
            } else {
                builder = builder.with_stdin(dev_null()?);
            }
            outs.push(Out {
                fd: out_r,
                stream: "stdout",
                split: LineSplitter::default(),
            });
            outs.push(Out {
                fd: err_r,
                stream: "stderr",
                split: LineSplitter::default(),
            });
        }

        let built = {
            let _adj = OomAdjGuard::save();
            builder
                .as_init(&spec.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        };
        let mut container = match built {
            Ok(c) => c,
            Err(e) => {
                let msg = error_text(&e);
                self.cleanup_failed(&spec.id, &cgroups_path, None);
                if tty {
                    self.drain_console();
                }
                bail!("{msg}");
            }
        };
        let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
        if tty {
            match self.recv_console() {
                Ok(master) => {
                    if spec.stdin {
                        stdin = Some(dup_fd(master.as_raw_fd())?);
                    }
                    outs.push(Out {
                        fd: master,
                        stream: "stdout",
                        split: LineSplitter::default(),
                    });
                }
                Err(e) => {
                    self.cleanup_failed(&spec.id, &cgroups_path, Some(&mut container));
                    return Err(e);
                }
            }
        }
        if let Err(e) = container.start() {
            let msg = error_text(&e);
            self.cleanup_failed(&spec.id, &cgroups_path, Some(&mut container));
            bail!("{msg}");
        }
        for o in &outs {
            set_nonblocking(o.fd.as_raw_fd());
        }
        let status = ContainerStatus {
            id: spec.id.clone(),
            pid,
            started_at: now_rfc3339(),
            log_path: spec.log_path.clone(),
            exit: None,
        };
        self.track(pid);
        self.ctrs.insert(
            spec.id.clone(),
            Ctr {
                spec,
                status: status.clone(),
                cgroups_path,
                container,
                log,
                outs,
                stdin,
            },
        );
        Ok(status)
    }

    /// Leaves nothing of a container whose create or start failed.
    fn cleanup_failed(&mut self, id: &str, cgroups_path: &str, c: Option<&mut Container>) {
        if let Some(c) = c {
            if let Some(pid) = c.pid() {
                unsafe { libc::kill(pid.as_raw(), libc::SIGKILL) };
                reap_pid(pid.as_raw(), Duration::from_secs(2));
            }
            let _ = c.delete(true);
        }
        kill_cgroup(cgroups_path);
        let _ = std::fs::remove_dir_all(self.root.join(id));
        // Init may have failed on its own (exec not found): reap it now.
        self.reap();
    }

    fn signal(&mut self, id: &str, sig: i32) -> Result<()> {
        let c = self
            .ctrs
            .get_mut(id)
            .ok_or_else(|| anyhow!("container {id} not found"))?;
        if c.status.exit.is_some() {
            return Ok(());
        }
        let s = Signal::try_from(sig).map_err(|e| anyhow!("signal {sig}: {e}"))?;
        c.container
            .kill(s, true)
            .map_err(|e| anyhow!("{}", error_text(&e)))?;
        Ok(())
    }

    fn remove(&mut self, id: &str) -> Result<()> {
        let Some(c) = self.ctrs.get_mut(id) else {
            return Ok(());
        };
        if c.status.exit.is_none() {
            let _ = c
                .container
                .kill(Signal::try_from(libc::SIGKILL).expect("SIGKILL"), true);
            let pid = c.status.pid;
            self.pidfds.remove(&pid);
            match reap_pid(pid, Duration::from_secs(10)).and_then(exit_of) {
                Some((_, code, sig)) => self.record_exit(id, code, sig),
                None => eprintln!("{} keeper: {id}: init {pid} did not die", now_rfc3339()),
            }
        }
        let mut c = self.ctrs.remove(id).expect("present");
        c.drain_all();
        for o in &mut c.outs {
            o.split.finish(o.stream, &mut c.log);
        }
        let res = c.container.delete(true);
        // Whatever delete left (it stops at the first error).
        kill_cgroup(&c.cgroups_path);
        let _ = std::fs::remove_dir_all(self.root.join(id));
        if let Err(e) = res {
            eprintln!("{} keeper: delete {id}: {}", now_rfc3339(), error_text(&e));
        }
        Ok(())
    }

    fn attach_stdin(&mut self, id: &str) -> Result<OwnedFd> {
        let c = self
            .ctrs
            .get_mut(id)
            .ok_or_else(|| anyhow!("container {id} not found"))?;
        if c.status.exit.is_some() {
            bail!("container {id} is not running");
        }
        let Some(fd) = &c.stdin else {
            bail!("container {id} has no stdin (stdin: false, or stdin_once already used)");
        };
        // stdin_once: the attached writer is the last one; its close is EOF.
        if c.spec.stdin_once && !c.spec.tty {
            return Ok(c.stdin.take().expect("checked"));
        }
        dup_fd(fd.as_raw_fd())
    }

    fn exec(&mut self, client: u64, id: &str, spec: &ExecSpec) -> Result<(i32, Vec<OwnedFd>)> {
        let c = self
            .ctrs
            .get(id)
            .ok_or_else(|| anyhow!("container {id} not found"))?;
        if c.status.exit.is_some() {
            bail!("container {id} is not running");
        }
        if spec.args.is_empty() {
            bail!("exec: no command");
        }
        // The container's own process (user, env, cwd, caps, rlimits) with
        // other args: libcontainer's tenant defaults would run as root in /.
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(c.spec.bundle.join("config.json"))?)?;
        let mut process = cfg["process"].clone();
        process["args"] = serde_json::json!(spec.args);
        process["terminal"] = serde_json::json!(spec.tty);
        if let Some(o) = process.as_object_mut() {
            o.remove("oomScoreAdj");
        }
        // libcontainer's tenant spec drops `linux.seccomp`; the container's
        // filter is installed by `ExecSeccomp` instead.
        let seccomp = match cfg["linux"].get("seccomp") {
            Some(v) => Some(ExecSeccomp::prepare(v, &mut process)?),
            None => None,
        };
        self.next_exec += 1;
        let pjson = self.exec_dir.join(format!("{}.json", self.next_exec));
        std::fs::write(&pjson, serde_json::to_vec(&process)?)?;

        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.root)?;
        let mut agent_fds = Vec::new();
        if spec.tty {
            self.drain_console();
            builder = builder.with_console_socket(Some(&self.console_path));
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            builder = builder.with_stdout(out_w).with_stderr(err_w);
            if spec.stdin {
                let (in_r, in_w) = pipe()?;
                builder = builder.with_stdin(in_r);
                agent_fds.push(in_w);
            } else {
                builder = builder.with_stdin(dev_null()?);
            }
            agent_fds.push(out_r);
            agent_fds.push(err_r);
        }
        if let Some(x) = seccomp {
            builder = builder.with_executor(x);
        }
        let built = {
            let _adj = OomAdjGuard::save();
            builder
                .as_tenant()
                .with_process(Some(&pjson))
                .with_detach(spec.tty)
                .build()
        };
        let _ = std::fs::remove_file(&pjson);
        let pid = match built {
            Ok(p) => p.as_raw(),
            Err(e) => {
                if spec.tty {
                    self.drain_console();
                }
                self.reap();
                bail!("{}", error_text(&e));
            }
        };
        if spec.tty {
            match self.recv_console() {
                Ok(m) => agent_fds.push(m),
                Err(e) => {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Err(e);
                }
            }
        }
        self.execs.insert(pid, Some(client));
        self.track(pid);
        Ok((pid, agent_fds))
    }

    /// Reaps the process behind pidfd `pid` if it has exited.
    fn reap_pidfd(&mut self, pid: i32) {
        let Some(fd) = self.pidfds.get(&pid) else {
            return;
        };
        let ws = waitid(
            Id::PIDFd(fd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        );
        let (code, sig) = match ws {
            Ok(WaitStatus::StillAlive) => return,
            Ok(ws) => match exit_of(ws) {
                Some((_, code, sig)) => (code, sig),
                None => return,
            },
            // Reaped by pid elsewhere (`kill_cgroup` after a SIGKILL).
            Err(_) => (128 + libc::SIGKILL, Some(libc::SIGKILL)),
        };
        self.pidfds.remove(&pid);
        self.exited(pid, code, sig);
    }

    /// Reaps children that have no pidfd. One with a pidfd (seen first
    /// here, before its pidfd was polled) is reaped through it.
    fn reap(&mut self) {
        loop {
            let peek = waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            );
            let pid = match peek {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => match ws.pid() {
                    Some(p) => p.as_raw(),
                    None => return,
                },
            };
            if self.pidfds.contains_key(&pid) {
                self.reap_pidfd(pid);
                continue;
            }
            let ws = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => ws,
            };
            // An untracked child: nobody is waiting for its status, but a
            // container whose pidfd could not be opened is still reported.
            if let Some((pid, code, sig)) = exit_of(ws) {
                self.exited(pid, code, sig);
            }
        }
    }

    /// Reports the exit of container init or exec process `pid`.
    fn exited(&mut self, pid: i32, code: i32, sig: Option<i32>) {
        let id = self
            .ctrs
            .iter()
            .find(|(_, c)| c.status.pid == pid && c.status.exit.is_none())
            .map(|(id, _)| id.clone());
        if let Some(id) = id {
            self.record_exit(&id, code, sig);
        } else if let Some(Some(client)) = self.execs.remove(&pid) {
            self.push(client, &Response::ExecExit(code), vec![]);
        }
    }

    /// Watches `pid` (a container init or exec process just created) for
    /// its exit. Without a pidfd (a kernel before 5.3) the SIGCHLD path
    /// still reaps it.
    fn track(&mut self, pid: i32) {
        match pidfd_open(pid) {
            Ok(fd) => {
                self.pidfds.insert(pid, fd);
            }
            Err(e) => eprintln!("{} keeper: {e:#}", now_rfc3339()),
        }
    }

    fn record_exit(&mut self, id: &str, code: i32, signal: Option<i32>) {
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        c.drain_all();
        let oom_killed = spec::cgroup_oom_killed(&c.cgroups_path);
        c.status.exit = Some(ExitStatus {
            code,
            signal,
            oom_killed,
            finished_at: now_rfc3339(),
        });
        // The writer is useless now; closing it lets attachers see EPIPE.
        c.stdin = None;
        let ev = Response::Event(c.status.clone());
        let subs: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.subscriber && !c.dead)
            .map(|(id, _)| *id)
            .collect();
        for s in subs {
            self.push(s, &ev, vec![]);
        }
    }
}
