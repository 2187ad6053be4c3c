//! Connecting to a port inside a pod's network namespace.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A TCP connection to localhost:`port` inside `netns` (IPv4, then IPv6),
/// as the CRI runtimes do for port-forward.
pub async fn connect(netns: PathBuf, port: u16) -> anyhow::Result<tokio::net::TcpStream> {
    let ns = netns.clone();
    let std_stream = crate::agent::network::run_in_netns(&netns, move || {
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
