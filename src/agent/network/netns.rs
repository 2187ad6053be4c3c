//! Pod namespaces without fork: a throwaway thread unshares its own
//! net/uts/ipc namespaces and bind-mounts them onto files, which then keep
//! them alive with no process in them. Work inside a namespace runs on a
//! fresh thread that did `setns`, never on a tokio worker.

use std::fs::File;
use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// The namespace files of one sandbox: `<state_dir>/ns/<uid>/{net,uts,ipc}`.
#[derive(Clone, Debug)]
pub struct NsFiles {
    pub dir: PathBuf,
    pub net: PathBuf,
    pub uts: PathBuf,
    pub ipc: PathBuf,
}

impl NsFiles {
    pub fn new(ns_root: &Path, uid: &str) -> NsFiles {
        let dir = ns_root.join(uid);
        NsFiles {
            net: dir.join("net"),
            uts: dir.join("uts"),
            ipc: dir.join("ipc"),
            dir,
        }
    }

    fn all(&self) -> [(&'static str, &Path); 3] {
        [
            ("net", self.net.as_path()),
            ("uts", self.uts.as_path()),
            ("ipc", self.ipc.as_path()),
        ]
    }

    /// All three files hold a namespace.
    pub fn mounted(&self) -> bool {
        self.all().iter().all(|(_, p)| is_ns_mount(p))
    }

    /// Creates fresh namespaces (UTS named `hostname`) and mounts them on the
    /// files, replacing whatever was mounted there. Blocking.
    pub fn create(&self, hostname: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        self.unmount()?;
        let files = self.clone();
        let hostname = hostname.to_string();
        let res = std::thread::Builder::new()
            .name("skiff-unshare".into())
            .spawn(move || -> Result<()> {
                // Per-thread namespaces: allowed in a multi-threaded process,
                // and the thread (its only member) exits right after.
                nix::sched::unshare(
                    CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
                )
                .context("unshare(net, uts, ipc)")?;
                nix::unistd::sethostname(&hostname)
                    .with_context(|| format!("sethostname({hostname:?})"))?;
                for (kind, path) in files.all() {
                    File::create(path).with_context(|| format!("creating {}", path.display()))?;
                    let src = format!("/proc/thread-self/ns/{kind}");
                    nix::mount::mount(
                        Some(src.as_str()),
                        path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .with_context(|| format!("bind-mounting {src} on {}", path.display()))?;
                }
                Ok(())
            })
            .context("spawning namespace thread")?
            .join()
            .map_err(|_| anyhow!("namespace thread panicked"))?;
        if res.is_err() {
            let _ = self.unmount();
        }
        res
    }

    /// Unmounts the namespace files (keeps the files). Idempotent.
    pub fn unmount(&self) -> Result<()> {
        for (_, path) in self.all() {
            // Loop: a crashed earlier attempt may have stacked mounts.
            while is_ns_mount(path) {
                nix::mount::umount2(path, MntFlags::MNT_DETACH)
                    .with_context(|| format!("unmounting {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Unmounts and deletes files and directory. Idempotent.
    pub fn remove(&self) -> Result<()> {
        self.unmount()?;
        for (_, path) in self.all() {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.dir.display())),
        }
    }
}

/// Whether `path` is a namespace file (a bind mount of nsfs).
pub fn is_ns_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Runs `f` on a fresh thread that first joined the namespace at `path`.
pub async fn in_ns<T: Send + 'static>(
    path: &Path,
    nstype: CloneFlags,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // Opened here so a missing sandbox is reported with its path.
    let ns = File::open(path).with_context(|| format!("opening namespace {}", path.display()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-setns".into())
        .spawn(move || {
            let res = nix::sched::setns(&ns, nstype)
                .context("setns")
                .and_then(|()| f());
            let _ = tx.send(res);
        })
        .context("spawning setns thread")?;
    rx.await.map_err(|_| anyhow!("namespace thread panicked"))?
}

/// Runs netlink work inside the network namespace at `netns`, on a thread
/// with its own rtnetlink socket (a socket belongs to the netns it was
/// opened in) and a current-thread runtime.
pub async fn netlink_in<T, F, Fut>(netns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    in_ns(netns, CloneFlags::CLONE_NEWNET, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building netns runtime")?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
            let task = tokio::spawn(conn);
            let res = f(handle).await;
            task.abort();
            res
        })
    })
    .await
}
