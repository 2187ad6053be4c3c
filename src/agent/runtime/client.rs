//! The agent's side: `Runtime`, an async client of the keeper.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::broadcast;

use super::proto::{self, Request, Response};
use super::{ContainerSpec, ContainerStatus, ExecSession, ExecSpec};

fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged while the
    // AsyncFd owns it.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// One connection to the keeper.
struct Conn {
    fd: AsyncFd<OwnedFd>,
}

impl Conn {
    async fn connect(path: &Path) -> io::Result<Conn> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                // Backlog full: the keeper is busy in a libcontainer call.
                Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Conn { fd: async_fd(fd)? })
    }

    async fn send(&self, req: &Request) -> io::Result<()> {
        let data = serde_json::to_vec(req)?;
        loop {
            let mut g = self.fd.writable().await?;
            match g.try_io(|fd| proto::send(fd.as_raw_fd(), &data, &[])) {
                Ok(r) => return r,
                Err(_) => continue,
            }
        }
    }

    /// Next message; None when the keeper closed the connection.
    async fn recv(&self) -> io::Result<Option<(Response, Vec<OwnedFd>)>> {
        loop {
            let mut g = self.fd.readable().await?;
            match g.try_io(|fd| proto::recv(fd.as_raw_fd())) {
                Ok(Ok(Some((data, fds)))) => {
                    let r = serde_json::from_slice(&data)?;
                    return Ok(Some((r, fds)));
                }
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
        }
    }
}

/// A pipe or pty end as tokio I/O. EIO on a pty master (the terminal's
/// last user is gone) reads as end of file.
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    fn new(fd: OwnedFd) -> io::Result<FdStream> {
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(FdStream { fd: async_fd(fd)? })
    }
}

fn rw_result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut g = ready!(self.fd.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            let r = g.try_io(|fd| {
                rw_result(unsafe { libc::read(fd.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) })
            });
            match r {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut g = ready!(self.fd.poll_write_ready(cx))?;
            match g.try_io(|fd| {
                rw_result(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })
            }) {
                Ok(r) => return Poll::Ready(r),
                Err(_) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(n) })
}

struct Inner {
    sock: PathBuf,
    #[allow(dead_code)] // read by keeper_pid
    state_dir: PathBuf,
    events: broadcast::Sender<ContainerStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Handle to the keeper. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

async fn subscribe_conn(sock: &Path) -> Result<Conn> {
    let c = Conn::connect(sock).await?;
    c.send(&Request::Subscribe).await?;
    match c.recv().await? {
        Some((Response::Ok, _)) => Ok(c),
        other => bail!("subscribe: unexpected reply {other:?}"),
    }
}

/// Forwards exit events; reconnects if the connection breaks.
async fn event_loop(sock: PathBuf, first: Conn, tx: broadcast::Sender<ContainerStatus>) {
    let mut conn = Some(first);
    loop {
        let c = match conn.take() {
            Some(c) => c,
            None => match subscribe_conn(&sock).await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        while let Ok(Some((r, _))) = c.recv().await {
            if let Response::Event(st) = r {
                let _ = tx.send(st);
            }
        }
    }
}

impl Runtime {
    /// Connects to the keeper whose socket is in `state_dir`, starting it
    /// when none answers: the standby forked at the top of main (see
    /// `standby`), or else this binary re-executed. A keeper that is
    /// already running — an agent restart — is reused with its containers.
    pub async fn connect_or_spawn(state_dir: &Path) -> Result<Runtime> {
        Self::connect_or_spawn_with(state_dir, Path::new("/proc/self/exe")).await
    }

    /// As `connect_or_spawn`, starting `exe __runtime-keeper` (tests run
    /// the real skiff binary as keeper).
    pub async fn connect_or_spawn_with(state_dir: &Path, exe: &Path) -> Result<Runtime> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("mkdir {}", state_dir.display()))?;
        let state_dir = std::fs::canonicalize(state_dir)?;
        let sock = state_dir.join("keeper.sock");
        if Conn::connect(&sock).await.is_err() {
            // The keeper forked at the top of main, else this binary again.
            if !super::standby::start(&state_dir) {
                spawn_keeper(&state_dir, exe)?;
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if Conn::connect(&sock).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(state_dir.join("keeper.log")).unwrap_or_default();
                    let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                    bail!("runtime keeper did not come up: {tail}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            super::standby::release(&state_dir);
        }
        // Every pod worker hears every exit; one that falls behind gets
        // `Lagged` and resyncs from the runtime's list, so a short buffer
        // (slots are allocated up front) is enough.
        let (tx, _) = broadcast::channel(256);
        // Subscribed before returning: no exit after this call is missed.
        let first = subscribe_conn(&sock).await?;
        let task = tokio::spawn(event_loop(sock.clone(), first, tx.clone()));
        Ok(Runtime {
            inner: Arc::new(Inner {
                sock,
                state_dir,
                events: tx,
                task,
            }),
        })
    }

    /// The keeper's pid (from `keeper.pid`).
    #[allow(dead_code)] // tests; diagnostics
    pub fn keeper_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.inner.state_dir.join("keeper.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn call(&self, req: Request) -> Result<(Response, Vec<OwnedFd>, Conn)> {
        let c = Conn::connect(&self.inner.sock)
            .await
            .context("connect to runtime keeper")?;
        c.send(&req).await.context("send to runtime keeper")?;
        match c.recv().await.context("runtime keeper")? {
            Some((Response::Err(e), _)) => Err(anyhow!(e)),
            Some((r, fds)) => Ok((r, fds, c)),
            None => bail!("runtime keeper closed the connection"),
        }
    }

    /// create + start; returns once the process runs.
    pub async fn start(&self, spec: ContainerSpec) -> Result<ContainerStatus> {
        match self.call(Request::Start(spec)).await?.0 {
            Response::Status(s) => Ok(s),
            r => bail!("unexpected reply {r:?}"),
        }
    }

    /// Sends a signal to every process of the container.
    pub async fn signal(&self, id: &str, signal: i32) -> Result<()> {
        self.call(Request::Signal {
            id: id.into(),
            signal,
        })
        .await?;
        Ok(())
    }

    /// Kills if running, removes cgroups and state, forgets the container.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.call(Request::Remove { id: id.into() }).await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<ContainerStatus>> {
        match self.call(Request::List).await?.0 {
            Response::List(l) => Ok(l),
            r => bail!("unexpected reply {r:?}"),
        }
    }

    /// Every container exit, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerStatus> {
        self.inner.events.subscribe()
    }

    pub async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecSession> {
        let tty = spec.tty;
        let want_stdin = spec.stdin;
        let (r, fds, conn) = self
            .call(Request::Exec {
                id: id.into(),
                spec,
            })
            .await?;
        if !matches!(r, Response::Exec { .. }) {
            bail!("unexpected reply {r:?}");
        }
        let mut fds = fds.into_iter();
        let mut next = || fds.next().ok_or_else(|| anyhow!("exec: missing fd"));
        let mut session = ExecSession {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            exit: tokio::sync::oneshot::channel().1,
        };
        if tty {
            let master = Arc::new(next()?);
            if want_stdin {
                session.stdin = Some(Box::new(FdStream::new(dup(master.as_raw_fd())?)?));
            }
            session.stdout = Some(Box::new(FdStream::new(dup(master.as_raw_fd())?)?));
            session.resize = Some(Box::new(move |w: u16, h: u16| {
                let ws = libc::winsize {
                    ws_row: h,
                    ws_col: w,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }));
        } else {
            if want_stdin {
                session.stdin = Some(Box::new(FdStream::new(next()?)?));
            }
            session.stdout = Some(Box::new(FdStream::new(next()?)?));
            session.stderr = Some(Box::new(FdStream::new(next()?)?));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        session.exit = rx;
        tokio::spawn(async move {
            while let Ok(Some((r, _))) = conn.recv().await {
                if let Response::ExecExit(code) = r {
                    let _ = tx.send(code);
                    return;
                }
            }
        });
        Ok(session)
    }

    /// Writer to the container's stdin (containers started with `stdin`).
    pub async fn attach_stdin(&self, id: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>> {
        let (_, fds, _) = self.call(Request::AttachStdin { id: id.into() }).await?;
        let fd = fds
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("attach: missing fd"))?;
        Ok(Box::new(FdStream::new(fd)?))
    }

    /// `skiff killall`: kills every container, removes them, stops the keeper.
    pub async fn shutdown(&self, kill_containers: bool) -> Result<()> {
        self.call(Request::Shutdown {
            kill: kill_containers,
        })
        .await?;
        self.inner.task.abort();
        // Returns once the keeper is gone (its socket no longer answers).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Conn::connect(&self.inner.sock).await.is_ok() {
            if Instant::now() > deadline {
                bail!("runtime keeper did not exit");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Starts the keeper in its own session so it survives the agent.
fn spawn_keeper(state_dir: &Path, exe: &Path) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("keeper.log"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__runtime-keeper")
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir("/");
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {} __runtime-keeper", exe.display()))?;
    // Reaps the keeper if it exits while this process lives.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}
