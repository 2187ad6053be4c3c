//! The node agent (kubelet + runtime + pod network). It talks to the cluster
//! only through the Kubernetes API (`kube::Client`), so the agent embedded in
//! `skiff server` and a remote `skiff agent` are the same code.

pub mod cli;
pub mod images;
pub mod kubelet;
pub mod network;
pub mod node;
pub mod runtime;
pub mod streaming;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

/// Everything the agent is told at start.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub node_ip: String,
    pub labels: Vec<String>,
    pub taints: Vec<String>,
    pub data_dir: PathBuf,
    /// The server's own agent: labelled as control plane.
    pub control_plane: bool,
    pub cluster_cidr: String,
    pub cluster_dns: String,
    pub cluster_domain: String,
    pub streaming_port: u16,
    /// Cluster CA (PEM): the streaming endpoint trusts client certificates it signed.
    pub ca_pem: String,
    pub registries: PathBuf,
    /// The API server as pods reach it (KUBERNETES_SERVICE_HOST/PORT use the Service).
    pub bridge: String,
    pub nft_table: String,
}

impl AgentConfig {
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
    pub fn net_config(&self, pod_cidr: &str) -> network::NetConfig {
        network::NetConfig {
            state_dir: self.agent_dir().join("net"),
            bridge: self.bridge.clone(),
            pod_cidr: pod_cidr.to_string(),
            cluster_cidr: self.cluster_cidr.clone(),
            nft_table: self.nft_table.clone(),
        }
    }
}

/// Node name default: the host name, lower-cased (as the kubelet does).
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Non-loopback IPv4 addresses of this host, in interface order.
pub fn host_ipv4s() -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a linked list we free with freeifaddrs.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && (*addr).sa_family as i32 == libc::AF_INET {
                let sin = addr as *const libc::sockaddr_in;
                let ip = std::net::Ipv4Addr::from(u32::from_be((*sin).sin_addr.s_addr));
                if !ip.is_loopback() {
                    out.push(ip);
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// First non-loopback IPv4 address of this host.
pub fn default_node_ip() -> String {
    host_ipv4s()
        .first()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// Runs the agent until the process ends.
pub async fn run(client: kube::Client, cfg: AgentConfig) -> Result<()> {
    let agent_dir = cfg.agent_dir();
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("creating {}", agent_dir.display()))?;
    let store = images::ImageStore::open(&cfg.data_dir)?;
    {
        let store = store.clone();
        let report = tokio::task::spawn_blocking(move || store.import_dir()).await?;
        match report {
            Ok(r) => tracing::debug!("air-gap import: {r:?}"),
            Err(e) => tracing::warn!("air-gap image import: {e:#}"),
        }
    }
    let runtime = runtime::Runtime::connect_or_spawn(&agent_dir.join("rt"))
        .await
        .context("starting the container runtime")?;
    node::register(&client, &cfg).await?;
    let pod_cidr = node::wait_pod_cidr(&client, &cfg.node_name).await?;
    let network = network::PodNetwork::init(cfg.net_config(&pod_cidr))
        .await
        .context("setting up the pod network")?;
    node::network_ready(&client, &cfg).await;
    let proxy_config = crate::proxy::ProxyConfig::from_agent(&cfg, &pod_cidr);
    let services = crate::proxy::ServiceWatch::start(client.clone());
    tokio::spawn(crate::proxy::run(services.clone(), proxy_config));
    if let Some(dns_config) = crate::dns::DnsConfig::from_agent(&cfg, &pod_cidr) {
        tokio::spawn(crate::dns::run(services, dns_config));
    }
    tokio::spawn(node::heartbeat(client.clone(), cfg.clone()));
    tokio::spawn(image_gc(
        client.clone(),
        cfg.node_name.clone(),
        store.clone(),
    ));
    let kubelet = kubelet::Kubelet::new(client, cfg.clone(), store, runtime.clone(), network);
    // Self-signed, as the kubelet's default: the API server does not verify
    // it (upstream's default too); the agent verifies the API server's client cert.
    let ips: Vec<std::net::IpAddr> = cfg.node_ip.parse().into_iter().collect();
    let (cert, key) = streaming::kubelet_serving_cert(&cfg.node_name, &ips)?;
    let streaming = streaming::Config {
        bind: format!("0.0.0.0:{}", cfg.streaming_port).parse()?,
        client_ca_pem: cfg.ca_pem.clone(),
        cert_pem: cert,
        key_pem: key,
    };
    let pods: Arc<dyn streaming::Pods> = kubelet.clone();
    tokio::spawn(async move {
        if let Err(e) = streaming::serve(streaming, pods, runtime).await {
            tracing::error!("streaming endpoint: {e:#}");
        }
    });
    tracing::info!(node = %cfg.node_name, %pod_cidr, "node agent running");
    kubelet.run().await
}

/// Every five minutes (the kubelet's period), frees disk by removing
/// unused images when the store's filesystem is 85% full or more (down to
/// 80%). Images any pod on this node names are in use; imported ones are pinned.
async fn image_gc(client: kube::Client, node: String, store: images::ImageStore) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::all(client);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(300)).await;
        let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"));
        let Ok(list) = pods.list(&lp).await else {
            continue;
        };
        let in_use: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .filter_map(|c| c.image.clone())
            .collect();
        let store = store.clone();
        let policy = images::GcPolicy::default();
        match tokio::task::spawn_blocking(move || store.gc(&policy, &in_use)).await {
            Ok(Ok(r)) if !r.removed.is_empty() => {
                tracing::info!(removed = ?r.removed, freed = r.freed, "image garbage collection")
            }
            Ok(Err(e)) => tracing::warn!("image garbage collection: {e:#}"),
            _ => {}
        }
    }
}
