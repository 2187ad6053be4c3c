//! Connecting to a port inside a pod's network namespace.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `netns`; the thread ends afterwards, so no other work ever runs in it.
// Stand-in for `crate::agent::network::run_in_netns` (same signature) until
// that lands; switch the call in `connect` then.
pub async fn run_in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-netns".into())
        .spawn(move || {
            let r = (|| {
                let ns = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {}", path.display()))?;
                Ok(f())
            })();
            let _ = tx.send(r);
        })
        .context("spawning netns thread")?;
    rx.await.context("netns thread vanished")?
}

/// A TCP connection to localhost:`port` inside `netns` (IPv4, then IPv6),
/// as the CRI runtimes do for port-forward.
pub async fn connect(netns: PathBuf, port: u16) -> anyhow::Result<tokio::net::TcpStream> {
    let ns = netns.clone();
    let std_stream = run_in_netns(&netns, move || {
        let timeout = Duration::from_secs(10);
        let v4 = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            timeout,
        );
        match v4 {
            Ok(s) => Ok(s),
            Err(e4) => std::net::TcpStream::connect_timeout(
                &SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
                timeout,
            )
            .map_err(|e6| {
                anyhow::anyhow!(
                    "failed to connect to localhost:{port} inside namespace {:?}, IPv4: {e4} IPv6: {e6}",
                    ns.display().to_string()
                )
            }),
        }
    })
    .await??;
    std_stream.set_nonblocking(true)?;
    let _ = std_stream.set_nodelay(true);
    Ok(tokio::net::TcpStream::from_std(std_stream)?)
}
