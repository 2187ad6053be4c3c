//! Cluster DNS: answers the Kubernetes DNS schema for the cluster domain
//! from Services and EndpointSlices (hickory-server with our own request
//! handler) and relays every other query to the node's upstream servers.
//! Served on the node's bridge address, port 53 (UDP and TCP); the proxy
//! DNATs the cluster DNS address there.

mod names;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::proxy::ServiceWatch;
use anyhow::{Context, Result};
use hickory_server::proto::op::{Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name as DnsName, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use names::Name;

/// Answers may be cached this long (seconds).
const TTL: u32 = 5;
/// How long one upstream gets to answer a relayed query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to listen (the bridge gateway).
    pub listen: Ipv4Addr,
    pub domain: String,
    /// Servers for names outside the cluster domain (the node's resolv.conf).
    pub upstreams: Vec<SocketAddr>,
}

impl DnsConfig {
    pub fn from_agent(cfg: &crate::agent::AgentConfig, pod_cidr: &str) -> Option<DnsConfig> {
        let listen = crate::proxy::first_address(pod_cidr)?;
        let cluster_dns: Option<IpAddr> = cfg.cluster_dns.parse().ok();
        let upstreams = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| upstreams(&t))
            .unwrap_or_default()
            .into_iter()
            .filter(|a| Some(a.ip()) != cluster_dns && a.ip() != IpAddr::V4(listen))
            .collect();
        Some(DnsConfig {
            listen,
            domain: cfg.cluster_domain.trim_end_matches('.').to_lowercase(),
            upstreams,
        })
    }
}

/// `nameserver` lines of a resolv.conf.
fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// One Service as DNS sees it.
#[derive(Clone, Debug, Default)]
struct SvcEntry {
    cluster_ip: Option<Ipv4Addr>,
    external_name: Option<String>,
    /// (name, protocol lower case, port)
    ports: Vec<(String, String, u16)>,
    /// Ready endpoints: (address, hostname).
    endpoints: Vec<(Ipv4Addr, Option<String>)>,
}

#[derive(Default)]
struct Snapshot {
    services: HashMap<(String, String), SvcEntry>,
    /// ClusterIP → (ns, svc), for PTR.
    by_ip: HashMap<Ipv4Addr, (String, String)>,
}

fn snapshot(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Snapshot {
    let mut snap = Snapshot::default();
    for s in services {
        let (Some(ns), Some(name), Some(spec)) = (
            s.metadata.namespace.clone(),
            s.metadata.name.clone(),
            s.spec.as_ref(),
        ) else {
            continue;
        };
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok());
        let entry = SvcEntry {
            cluster_ip,
            external_name: (spec.type_.as_deref() == Some("ExternalName"))
                .then(|| spec.external_name.clone())
                .flatten(),
            ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().filter(|n| !n.is_empty())?,
                        p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                        u16::try_from(p.port).ok()?,
                    ))
                })
                .collect(),
            endpoints: Vec::new(),
        };
        if let Some(ip) = cluster_ip {
            snap.by_ip.insert(ip, (ns.clone(), name.clone()));
        }
        snap.services.insert((ns, name), entry);
    }
    for sl in slices {
        let Some(key) = crate::proxy::model::ipv4_slice_service(sl) else {
            continue;
        };
        let Some(entry) = snap.services.get_mut(&key) else {
            continue;
        };
        for ep in &sl.endpoints {
            // Unset means ready; publishNotReadyAddresses is folded in already.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse() {
                    entry.endpoints.push((ip, ep.hostname.clone()));
                }
            }
        }
    }
    for e in snap.services.values_mut() {
        e.endpoints.sort();
        e.endpoints.dedup();
    }
    snap
}

/// What a cluster-domain lookup yields.
#[derive(Debug, PartialEq)]
enum Answer {
    Records(Vec<Record>),
    NxDomain,
    Forward,
}

fn fqdn(s: &str) -> Option<DnsName> {
    DnsName::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok()
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// Answers `qname`/`qtype` from the snapshot.
fn lookup(snap: &Snapshot, domain: &str, qname: &DnsName, qtype: RecordType) -> Answer {
    let text = qname.to_ascii().to_lowercase();
    let a = |ip: Ipv4Addr| Record::from_rdata(qname.clone(), TTL, RData::A(A(ip)));
    let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let svc = |ns: &str, svc: &str| snap.services.get(&(ns.to_string(), svc.to_string()));
    let mut out = Vec::new();
    match names::parse(&text, domain) {
        Name::External => return Answer::Forward,
        Name::Unknown => return Answer::NxDomain,
        Name::Service { ns, svc: name } => {
            let Some(e) = svc(&ns, &name) else {
                return Answer::NxDomain;
            };
            if let Some(target) = e.external_name.as_deref().and_then(fqdn) {
                out.push(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::CNAME(CNAME(target)),
                ));
            } else if want(RecordType::A) {
                match e.cluster_ip {
                    Some(ip) => out.push(a(ip)),
                    // Headless: every ready endpoint.
                    None => out.extend(e.endpoints.iter().map(|(ip, _)| a(*ip))),
                }
            }
        }
        Name::Srv {
            port,
            proto,
            ns,
            svc: name,
        } => {
            let Some(e) = svc(&ns, &name) else {
                return Answer::NxDomain;
            };
            let Some((_, _, p)) = e.ports.iter().find(|(n, pr, _)| *n == port && *pr == proto)
            else {
                return Answer::NxDomain;
            };
            if want(RecordType::SRV) {
                let base = format!("{name}.{ns}.svc.{domain}");
                let targets: Vec<String> = if e.cluster_ip.is_some() {
                    vec![base]
                } else {
                    e.endpoints
                        .iter()
                        .map(|(ip, h)| {
                            format!("{}.{base}", h.clone().unwrap_or_else(|| dashed(*ip)))
                        })
                        .collect()
                };
                for t in targets.iter().filter_map(|t| fqdn(t)) {
                    out.push(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, 100, *p, t)),
                    ));
                }
            }
        }
        Name::Endpoint {
            host,
            ns,
            svc: name,
        } => {
            let Some(e) = svc(&ns, &name) else {
                return Answer::NxDomain;
            };
            let found: Vec<Ipv4Addr> = e
                .endpoints
                .iter()
                .filter(|(ip, h)| h.as_deref() == Some(host.as_str()) || dashed(*ip) == host)
                .map(|(ip, _)| *ip)
                .collect();
            if found.is_empty() {
                return Answer::NxDomain;
            }
            if want(RecordType::A) {
                out.extend(found.into_iter().map(a));
            }
        }
        Name::Pod { ip, .. } => {
            if want(RecordType::A) {
                out.push(a(ip));
            }
        }
        Name::Ptr(ip) => {
            let Some((ns, name)) = snap.by_ip.get(&ip) else {
                return Answer::Forward;
            };
            if want(RecordType::PTR)
                && let Some(t) = fqdn(&format!("{name}.{ns}.svc.{domain}"))
            {
                out.push(Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(t))));
            }
        }
    }
    Answer::Records(out)
}

struct Handler {
    snap: Arc<RwLock<Snapshot>>,
    domain: String,
    upstreams: Vec<SocketAddr>,
}

impl Handler {
    fn soa(&self) -> Option<Record> {
        let zone = fqdn(&self.domain)?;
        let soa = SOA::new(
            fqdn(&format!("ns.dns.{}", self.domain))?,
            fqdn(&format!("hostmaster.{}", self.domain))?,
            1,
            7200,
            1800,
            86400,
            TTL,
        );
        Some(Record::from_rdata(zone, TTL, RData::SOA(soa)))
    }

    /// Relays the raw query to each upstream in turn; the first answer wins.
    async fn forward(&self, raw: &[u8]) -> Option<Message> {
        for up in &self.upstreams {
            let bind: SocketAddr = if up.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(raw, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await
                && from == *up
                && let Ok(m) = Message::from_vec(&buf[..n])
            {
                return Some(m);
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response, msg, &request.metadata).await;
        };
        let qname: DnsName = info.query.name().into();
        let qtype = info.query.query_type();
        let answer = {
            let snap = self.snap.read().unwrap_or_else(|e| e.into_inner());
            lookup(&snap, &self.domain, &qname, qtype)
        };
        match answer {
            Answer::Records(records) => {
                meta.authoritative = true;
                let soa: Vec<Record> = if records.is_empty() {
                    self.soa().into_iter().collect()
                } else {
                    Vec::new()
                };
                let msg = builder.build(meta, records.iter(), soa.iter(), [], []);
                send(&mut response, msg, &request.metadata).await
            }
            Answer::NxDomain => {
                meta.authoritative = true;
                meta.response_code = ResponseCode::NXDomain;
                let soa: Vec<Record> = self.soa().into_iter().collect();
                let msg = builder.build(meta, [], soa.iter(), [], []);
                send(&mut response, msg, &request.metadata).await
            }
            Answer::Forward => match self.forward(request.as_slice()).await {
                Some(m) => {
                    let mut meta = m.metadata;
                    meta.id = request.metadata.id;
                    let msg = builder.build(
                        meta,
                        m.answers.iter(),
                        m.authorities.iter(),
                        [],
                        m.additionals.iter(),
                    );
                    send(&mut response, msg, &request.metadata).await
                }
                None => {
                    let msg = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                    send(&mut response, msg, &request.metadata).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!("dns: sending a response: {e}");
            let mut m = Metadata::response_from_request(request);
            m.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata: m,
                counts: Default::default(),
            }
            .into()
        }
    }
}

/// Serves cluster DNS until the process ends.
pub async fn run(watch: ServiceWatch, cfg: DnsConfig) {
    if let Err(e) = serve(watch, cfg).await {
        tracing::error!("cluster DNS: {e:#}");
    }
}

async fn serve(watch: ServiceWatch, cfg: DnsConfig) -> Result<()> {
    let snap = Arc::new(RwLock::new(Snapshot::default()));
    {
        let snap = snap.clone();
        let mut changed = watch.changes();
        tokio::spawn(async move {
            if !watch.ready().await {
                return;
            }
            loop {
                let next = snapshot(&watch.services.state(), &watch.slices.state());
                *snap.write().unwrap_or_else(|e| e.into_inner()) = next;
                if changed.changed().await.is_err() {
                    return;
                }
                // Coalesce bursts of changes.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let addr = SocketAddr::from((cfg.listen, 53));
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding udp {addr}"))?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding tcp {addr}"))?;
    tracing::info!(%addr, upstreams = ?cfg.upstreams, "cluster DNS serving");
    let mut server = hickory_server::Server::new(Handler {
        snap,
        domain: cfg.domain,
        upstreams: cfg.upstreams,
    });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64);
    server.block_until_done().await.context("DNS server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let svc: Arc<Service> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.20",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
            .unwrap(),
        );
        let headless: Arc<Service> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None",
                    "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}))
            .unwrap(),
        );
        let slice: Arc<EndpointSlice> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db-x", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.42.0.8"], "hostname": "db-0"},
                    {"addresses": ["10.42.0.9"], "conditions": {"ready": false}}]}))
            .unwrap(),
        );
        snapshot(&[svc, headless], &[slice])
    }

    fn q(name: &str, t: RecordType) -> Answer {
        lookup(
            &snap(),
            "cluster.local",
            &DnsName::from_ascii(name).unwrap(),
            t,
        )
    }

    fn ips(a: Answer) -> Vec<String> {
        let Answer::Records(r) = a else {
            panic!("{a:?}")
        };
        r.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn answers_services_endpoints_and_pods() {
        assert_eq!(
            ips(q("web.default.svc.cluster.local.", RecordType::A)),
            ["10.43.0.20"]
        );
        // Headless: ready endpoints only.
        assert_eq!(
            ips(q("db.default.svc.cluster.local.", RecordType::A)),
            ["10.42.0.8"]
        );
        assert_eq!(
            ips(q("db-0.db.default.svc.cluster.local.", RecordType::A)),
            ["10.42.0.8"]
        );
        assert_eq!(
            ips(q("10-42-0-3.default.pod.cluster.local.", RecordType::A)),
            ["10.42.0.3"]
        );
        let srv = ips(q(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        assert_eq!(srv, ["0 100 80 web.default.svc.cluster.local."]);
        let srv = ips(q("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV));
        assert_eq!(srv, ["0 100 5432 db-0.db.default.svc.cluster.local."]);
        // Known name, other type: empty answer, not NXDOMAIN.
        assert!(ips(q("web.default.svc.cluster.local.", RecordType::AAAA)).is_empty());
        assert_eq!(
            ips(q("20.0.43.10.in-addr.arpa.", RecordType::PTR)),
            ["web.default.svc.cluster.local."]
        );
    }

    #[test]
    fn unknown_names_and_forwarding() {
        assert_eq!(
            q("nope.default.svc.cluster.local.", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            q("_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV),
            Answer::NxDomain
        );
        assert_eq!(q("example.com.", RecordType::A), Answer::Forward);
        assert_eq!(
            upstreams("# c\nnameserver 192.0.2.1\nsearch x\nnameserver ::1\n"),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
