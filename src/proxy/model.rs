//! What the proxy programs, reduced from Services and EndpointSlices: one
//! entry per service port with its ready endpoints. Pure, so the rules can
//! be unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Layer-4 protocol of a service port, spelled as nft spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of one Service, with everything its rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name ("" when the service has a single unnamed port).
    pub port_name: String,
    pub proto: Proto,
    pub port: u16,
    /// None for headless services (no virtual IP to program).
    pub cluster_ip: Option<Ipv4Addr>,
    /// `spec.externalIPs` and load-balancer ingress IPs: served like the ClusterIP.
    pub external_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// ClientIP session affinity timeout, seconds.
    pub affinity_timeout: Option<u32>,
    /// Ready endpoints, sorted and unique.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `ns/svc/proto/port-name-or-number`: the readable part of chain names.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.proto.as_str(),
            port
        )
    }
}

/// Upstream's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// The (namespace, name) of the Service an IPv4 EndpointSlice belongs to.
pub fn ipv4_slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let ns = slice.metadata.namespace.clone()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get(crate::controllers::endpoints::LABEL_SERVICE_NAME)?
        .clone();
    Some((ns, svc))
}

/// Every programmable service port. `node` filters endpoints of services
/// with `internalTrafficPolicy: Local` to this node's.
pub fn service_ports(
    services: &[std::sync::Arc<Service>],
    slices: &[std::sync::Arc<EndpointSlice>],
    node: &str,
) -> Vec<ServicePort> {
    // (namespace, service) → slices
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some((ns, svc)) = ipv4_slice_service(s) else {
            continue;
        };
        by_service.entry((ns, svc)).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = spec.cluster_ip.as_deref().and_then(ipv4);
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| ipv4(s))
            .collect();
        if let Some(ingress) = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
        {
            external_ips.extend(
                ingress
                    .iter()
                    .filter_map(|i| i.ip.as_deref().and_then(ipv4)),
            );
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let local_only = spec.internal_traffic_policy.as_deref() == Some("Local");
        let key = (ns.to_string(), name.to_string());
        let svc_slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        for sp in spec.ports.iter().flatten() {
            let Some(proto) = Proto::parse(sp.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let port_name = sp.name.clone().unwrap_or_default();
            let mut eps = BTreeSet::new();
            for slice in svc_slices {
                let Some(ep_port) = slice.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name
                        && Proto::parse(p.protocol.as_deref()) == Some(proto)
                }) else {
                    continue;
                };
                let Some(ep_port) = ep_port.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    // Unset means ready; the endpoints controller already
                    // folds publishNotReadyAddresses into `ready`.
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    if local_only && ep.node_name.as_deref() != Some(node) {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Some(ip) = ipv4(a) {
                            eps.insert(Endpoint { ip, port: ep_port });
                        }
                    }
                }
            }
            out.push(ServicePort {
                namespace: ns.to_string(),
                name: name.to_string(),
                port_name,
                proto,
                port,
                cluster_ip,
                external_ips: external_ips.clone(),
                node_port: sp.node_port.and_then(|p| u16::try_from(p).ok()),
                affinity_timeout,
                endpoints: eps.into_iter().collect(),
            });
        }
    }
    out.sort_by_key(ServicePort::id);
    out
}
