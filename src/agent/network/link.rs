//! rtnetlink operations: bridge, veth pair, pod-side addressing.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use sha2::Digest;

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;

/// The errno of a netlink error reply.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Ignores "already exists" so repeated setup converges.
fn exists_ok(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// A netlink connection in the calling thread's network namespace; its
/// task stops when this is dropped.
pub struct Netlink {
    pub handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    pub fn new() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink socket")?;
        Ok(Netlink {
            handle,
            task: tokio::spawn(conn),
        })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
    }
}

pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(get_link(h, name).await?.map(|m| m.header.index))
}

/// Whether `link` is up and enslaved to the bridge `bridge_index`.
pub fn attached_and_up(link: &LinkMessage, bridge_index: u32) -> bool {
    link.header.flags.contains(LinkFlags::Up)
        && link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == bridge_index))
}

/// A locally administered unicast MAC derived from the bridge name.
fn bridge_mac(name: &str) -> [u8; 6] {
    let h = sha2::Sha256::digest(name.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&h[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Creates the bridge if missing, gives it `gateway/prefix`, brings it up.
pub async fn ensure_bridge(h: &Handle, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<u32> {
    let index = match link_index(h, name).await? {
        Some(i) => i,
        None => {
            // A fixed MAC: otherwise the bridge takes the lowest port MAC,
            // which changes as pods come and go and stales the pods' ARP
            // entry for their gateway.
            let mac = bridge_mac(name);
            exists_ok(
                h.link()
                    .add(LinkBridge::new(name).address(mac.to_vec()).build())
                    .execute()
                    .await,
            )
            .with_context(|| format!("creating bridge {name}"))?;
            link_index(h, name)
                .await?
                .with_context(|| format!("bridge {name} vanished after creation"))?
        }
    };
    exists_ok(
        h.address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await,
    )
    .with_context(|| format!("adding {gateway}/{prefix} to {name}"))?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("bringing {name} up"))?;
    Ok(index)
}

/// Deletes a link by name; false when there was none.
pub async fn delete_link(h: &Handle, name: &str) -> Result<bool> {
    let Some(index) = link_index(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("deleting link {name}")),
    }
}

/// Creates a veth pair whose peer is born inside the netns `netns_fd` as
/// `eth0` (as `ip link add H type veth peer name eth0 netns N`), so no
/// temporary name can clash in the host namespace.
pub async fn create_veth(h: &Handle, host: &str, netns_fd: RawFd) -> Result<u32> {
    let peer = LinkUnspec::new_with_name("eth0")
        .setns_by_fd(netns_fd)
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new(host, "eth0")
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("creating veth {host}"))?;
    link_index(h, host)
        .await?
        .with_context(|| format!("veth {host} vanished after creation"))
}

/// Enslaves `index` to the bridge with hairpin mode (a pod reaching itself
/// through a Service IP comes back out of its own port), then brings it up:
/// up-and-attached marks a finished sandbox.
pub async fn attach(h: &Handle, index: u32, bridge_index: u32) -> Result<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .build(),
        )
        .execute()
        .await
        .context("attaching veth to bridge")?;
    h.link()
        .set_port(LinkBridgePort::new(index).hairpin(true).build())
        .execute()
        .await
        .context("setting hairpin mode")?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .context("bringing veth up")
}

/// Inside the pod netns: `lo` up, `eth0` with `ip/prefix` up, default route
/// via `gateway`. Idempotent.
pub async fn configure_pod(h: Handle, ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
    let lo = link_index(&h, "lo").await?.context("pod netns has no lo")?;
    h.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .context("bringing lo up")?;
    let eth0 = link_index(&h, "eth0")
        .await?
        .context("pod netns has no eth0")?;
    exists_ok(
        h.address()
            .add(eth0, IpAddr::V4(ip), prefix)
            .execute()
            .await,
    )
    .with_context(|| format!("adding {ip}/{prefix} to eth0"))?;
    h.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .context("bringing eth0 up")?;
    exists_ok(
        h.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .output_interface(eth0)
                    .build(),
            )
            .execute()
            .await,
    )
    .with_context(|| format!("adding default route via {gateway}"))?;
    Ok(())
}
