//! The proxy's nftables table, after kube-proxy's nftables mode (KEP-3866),
//! reduced: ClusterIPs, externalIPs and NodePorts dispatched through verdict
//! maps, `numgen random` over per-endpoint DNAT chains, ClientIP affinity
//! with dynamic sets, reject for services without endpoints.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, Prefix, SetItem, Verdict,
};
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, Nftables, Rule, Set, SetFlag, SetType,
    SetTypeValue, Table,
};
use nftables::stmt::{
    JumpTarget, Mangle, Match, NAT, NATFlag, Operator, Reject, RejectType, SetOp, Statement,
    VerdictMap,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use sha2::Digest;

use super::model::{Endpoint, ServicePort};

/// Numeric priorities: nft 1.0.6 rejects named ones in some hooks.
const PRIO_DSTNAT: i32 = -100;
const PRIO_SRCNAT: i32 = 100;
/// Before DNAT, so the original service address is still visible.
const PRIO_FILTER: i32 = PRIO_DSTNAT - 10;
const MASQ_MARK: u32 = 0x4000;

pub const SERVICES: &str = "services";
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";

/// Map value type written for verdict maps, replaced by `to_json`.
const VERDICT_PLACEHOLDER: SetType = SetType::Mark;

/// The document as nft takes it: verdict maps get their real value type.
pub fn to_json(nft: &Nftables<'_>) -> serde_json::Value {
    let mut doc = serde_json::to_value(nft).unwrap_or_default();
    for cmd in doc["nftables"].as_array_mut().into_iter().flatten() {
        for verb in ["add", "flush", "delete"] {
            if let Some(map) = cmd.get_mut(verb).and_then(|c| c.get_mut("map"))
                && map["map"] == "mark"
            {
                map["map"] = "verdict".into();
            }
        }
    }
    doc
}

/// Longest chain/set name we generate (the kernel allows 255 bytes).
const MAX_NAME: usize = 200;

/// What the builder needs to know about the node.
#[derive(Clone, Debug)]
pub struct Params {
    pub table: String,
    /// The cluster's pod range: other sources are masqueraded to ClusterIPs.
    pub cluster_cidr: (Ipv4Addr, u8),
    /// Cluster DNS: (service address, node-local server address), port 53.
    pub dns: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Affinity sets already in the table.
    pub existing_sets: BTreeSet<String>,
}

/// A built sync: the transaction plus the per-service objects it keeps.
pub struct Built {
    pub nft: Nftables<'static>,
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

/// The chain names kube-proxy uses: `<kind>-<HASH8>-<readable>`, HASH8 the
/// first 8 base32 characters of sha256(readable), so truncation of long
/// readable parts never makes two names equal.
pub fn chain_name(kind: &str, readable: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = sha2::Sha256::digest(readable.as_bytes());
    // 8 base32 characters = the first 40 bits.
    let bits = digest[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let hash: String = (0..8)
        .map(|i| ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char)
        .collect();
    let mut name = format!("{kind}-{hash}-{readable}");
    if name.len() > MAX_NAME {
        let mut cut = MAX_NAME;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

pub fn service_chain(sp: &ServicePort) -> String {
    chain_name("service", &sp.id())
}
pub fn external_chain(sp: &ServicePort) -> String {
    chain_name("external", &sp.id())
}
fn endpoint_readable(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("{}__{}/{}", sp.id(), ep.ip, ep.port)
}
pub fn endpoint_chain(sp: &ServicePort, ep: &Endpoint) -> String {
    chain_name("endpoint", &endpoint_readable(sp, ep))
}
pub fn affinity_set(sp: &ServicePort, ep: &Endpoint) -> String {
    chain_name("affinity", &endpoint_readable(sp, ep))
}

// ---- expression helpers ----

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}
fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Owned(protocol.to_string()),
            field: Cow::Owned(field.to_string()),
        },
    )))
}
fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}
fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}
fn prefix(net: Ipv4Addr, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(net.to_string())),
        len: len.into(),
    }))
}
fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}
fn goto(target: &str) -> Statement<'static> {
    Statement::Goto(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}
fn goto_verdict(target: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: Cow::Owned(target.to_string()),
    }))
}
/// `ip daddr . meta l4proto . th dport`
fn ip_proto_port() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        payload("ip", "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ]))
}
fn proto_port() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ]))
}
fn vmap(key: Expression<'static>, map: &str) -> Statement<'static> {
    Statement::VerdictMap(VerdictMap {
        key,
        data: s(format!("@{map}")),
    })
}
fn ct_state_new() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        s("new"),
    )
}
fn dnat(ip: Ipv4Addr, port: u16) -> Statement<'static> {
    Statement::DNAT(Some(NAT {
        addr: Some(s(ip.to_string())),
        family: None,
        port: Some(Expression::Number(port.into())),
        flags: None,
    }))
}

struct Tx {
    b: Batch<'static>,
    table: String,
}

impl Tx {
    fn chain(&self, name: &str) -> Chain<'static> {
        Chain {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            ..Chain::default()
        }
    }
    /// Adds (if missing) and empties a regular chain.
    fn fresh_chain(&mut self, name: &str) {
        let c = self.chain(name);
        self.b.add(NfListObject::Chain(c.clone()));
        self.b.add_cmd(NfCmd::Flush(FlushObject::Chain(c)));
    }
    fn fresh_base_chain(&mut self, name: &str, ty: NfChainType, hook: NfHook, prio: i32) {
        let c = Chain {
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..self.chain(name)
        };
        self.b.add(NfListObject::Chain(c));
        self.b
            .add_cmd(NfCmd::Flush(FlushObject::Chain(self.chain(name))));
    }
    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.b.add(NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            chain: Cow::Owned(chain.to_string()),
            expr: Cow::Owned(expr),
            ..Rule::default()
        }));
    }
    fn fresh_vmap(&mut self, name: &str, key: &[SetType]) {
        let m = Map {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            handle: None,
            set_type: SetTypeValue::Concatenated(Cow::Owned(key.to_vec())),
            // Stand-in for `verdict`, which the crate's SetType lacks;
            // `to_json` swaps it.
            map: SetTypeValue::Single(VERDICT_PLACEHOLDER),
            policy: None,
            flags: None,
            elem: None,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        };
        self.b.add(NfListObject::Map(Box::new(m.clone())));
        self.b.add_cmd(NfCmd::Flush(FlushObject::Map(Box::new(m))));
    }
    fn elements(&mut self, map: &str, elems: Vec<Expression<'static>>) {
        if elems.is_empty() {
            return;
        }
        self.b.add(NfListObject::Element(Element {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(map.to_string()),
            elem: Cow::Owned(elems),
        }));
    }
    fn affinity(&mut self, name: &str, timeout: u32) -> Set<'static> {
        Set {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            handle: None,
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            policy: None,
            flags: Some(HashSet::from([SetFlag::Timeout])),
            elem: None,
            timeout: Some(timeout),
            gc_interval: None,
            size: None,
            comment: None,
        }
    }
}

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: Cow::Owned(name.to_string()),
        handle: None,
    }
}

/// A map element `key : goto target`.
fn mapping(key: Vec<Expression<'static>>, target: &str) -> Expression<'static> {
    Expression::List(vec![
        Expression::Named(NamedExpression::Concat(key)),
        goto_verdict(target),
    ])
}

/// One sync as a single transaction: the fixed chains and maps are flushed
/// and refilled, every live service/endpoint chain rewritten. Chains no
/// longer referenced are left for [`cleanup`] in a later transaction.
pub fn build(p: &Params, ports: &[ServicePort]) -> Built {
    let mut tx = Tx {
        b: Batch::new(),
        table: p.table.clone(),
    };
    let mut chains = BTreeSet::new();
    let mut sets = BTreeSet::new();
    tx.b.add(NfListObject::Table(table(&p.table)));

    // Maps before the rules that reference them.
    let ip_key = [SetType::Ipv4Addr, SetType::InetProto, SetType::InetService];
    let port_key = [SetType::InetProto, SetType::InetService];
    tx.fresh_vmap(SERVICE_IPS, &ip_key);
    tx.fresh_vmap(NO_ENDPOINT_SERVICES, &ip_key);
    tx.fresh_vmap(SERVICE_NODEPORTS, &port_key);
    tx.fresh_vmap(NO_ENDPOINT_NODEPORTS, &port_key);

    // Helper chains.
    for c in [
        SERVICES,
        MARK_FOR_MASQUERADE,
        MASQUERADING,
        SERVICE_ENDPOINTS_CHECK,
        NODEPORT_ENDPOINTS_CHECK,
        REJECT_CHAIN,
    ] {
        tx.fresh_chain(c);
    }
    // Base chains, once the chains they jump to exist.
    for (name, hook, prio, target) in [
        ("nat-prerouting", NfHook::Prerouting, PRIO_DSTNAT, SERVICES),
        ("nat-output", NfHook::Output, PRIO_DSTNAT, SERVICES),
        (
            "nat-postrouting",
            NfHook::Postrouting,
            PRIO_SRCNAT,
            MASQUERADING,
        ),
    ] {
        tx.fresh_base_chain(name, NfChainType::NAT, hook, prio);
        tx.rule(name, vec![jump(target)]);
    }
    for (name, hook) in [
        ("filter-input", NfHook::Input),
        ("filter-forward", NfHook::Forward),
        ("filter-output", NfHook::Output),
    ] {
        tx.fresh_base_chain(name, NfChainType::Filter, hook, PRIO_FILTER);
        if name == "filter-input" {
            tx.rule(name, vec![ct_state_new(), jump(NODEPORT_ENDPOINTS_CHECK)]);
        }
        tx.rule(name, vec![ct_state_new(), jump(SERVICE_ENDPOINTS_CHECK)]);
    }

    let mark = || meta(MetaKey::Mark);
    tx.rule(
        MARK_FOR_MASQUERADE,
        vec![Statement::Mangle(Mangle {
            key: mark(),
            value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                mark(),
                Expression::Number(MASQ_MARK),
            ]))),
        })],
    );
    tx.rule(
        MASQUERADING,
        vec![
            matches(
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    mark(),
                    Expression::Number(MASQ_MARK),
                ))),
                Operator::EQ,
                Expression::Number(0),
            ),
            Statement::Return(None),
        ],
    );
    tx.rule(
        MASQUERADING,
        vec![Statement::Mangle(Mangle {
            key: mark(),
            value: Expression::BinaryOperation(Box::new(BinaryOperation::XOR(
                mark(),
                Expression::Number(MASQ_MARK),
            ))),
        })],
    );
    tx.rule(
        MASQUERADING,
        vec![Statement::Masquerade(Some(NAT {
            addr: None,
            family: None,
            port: None,
            flags: Some(HashSet::from([NATFlag::FullyRandom])),
        }))],
    );
    // TCP clients get a reset, others ICMP port unreachable: both fail fast.
    tx.rule(
        REJECT_CHAIN,
        vec![
            matches(meta(MetaKey::L4proto), Operator::EQ, s("tcp")),
            Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
        ],
    );
    tx.rule(REJECT_CHAIN, vec![Statement::Reject(None)]);
    tx.rule(
        SERVICE_ENDPOINTS_CHECK,
        vec![vmap(ip_proto_port(), NO_ENDPOINT_SERVICES)],
    );
    let not_loopback = || {
        matches(
            payload("ip", "daddr"),
            Operator::NEQ,
            prefix(Ipv4Addr::new(127, 0, 0, 0), 8),
        )
    };
    tx.rule(
        NODEPORT_ENDPOINTS_CHECK,
        vec![not_loopback(), vmap(proto_port(), NO_ENDPOINT_NODEPORTS)],
    );

    // The cluster DNS address goes to the node's own server.
    if let Some((vip, server)) = p.dns {
        for proto in ["udp", "tcp"] {
            tx.rule(
                SERVICES,
                vec![
                    matches(payload("ip", "daddr"), Operator::EQ, s(vip.to_string())),
                    matches(
                        payload(proto, "dport"),
                        Operator::EQ,
                        Expression::Number(53),
                    ),
                    dnat(server, 53),
                ],
            );
        }
    }
    tx.rule(SERVICES, vec![vmap(ip_proto_port(), SERVICE_IPS)]);
    tx.rule(
        SERVICES,
        vec![
            Statement::Match(Match {
                left: Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: [FibFlag::Daddr].into_iter().collect(),
                })),
                right: s("local"),
                op: Operator::EQ,
            }),
            not_loopback(),
            vmap(proto_port(), SERVICE_NODEPORTS),
        ],
    );

    let mut service_ips = Vec::new();
    let mut no_ep_services = Vec::new();
    let mut nodeports = Vec::new();
    let mut no_ep_nodeports = Vec::new();
    for sp in ports {
        let proto = sp.proto.as_str();
        let port = Expression::Number(sp.port.into());
        let is_dns = |ip: Ipv4Addr| p.dns.is_some_and(|(vip, _)| vip == ip) && sp.port == 53;
        let vips: Vec<(Ipv4Addr, bool)> = sp
            .cluster_ip
            .filter(|ip| !is_dns(*ip))
            .map(|ip| (ip, false))
            .into_iter()
            .chain(sp.external_ips.iter().map(|ip| (*ip, true)))
            .collect();
        if vips.is_empty() && sp.node_port.is_none() {
            continue;
        }
        if sp.endpoints.is_empty() {
            for (ip, _) in &vips {
                no_ep_services.push(mapping(
                    vec![s(ip.to_string()), s(proto), port.clone()],
                    REJECT_CHAIN,
                ));
            }
            if let Some(np) = sp.node_port {
                no_ep_nodeports.push(mapping(
                    vec![s(proto), Expression::Number(np.into())],
                    REJECT_CHAIN,
                ));
            }
            continue;
        }
        let svc_chain = service_chain(sp);
        let ext_chain = external_chain(sp);
        let external = sp.node_port.is_some() || vips.iter().any(|(_, ext)| *ext);
        for (ip, ext) in &vips {
            service_ips.push(mapping(
                vec![s(ip.to_string()), s(proto), port.clone()],
                if *ext { &ext_chain } else { &svc_chain },
            ));
        }
        if let Some(np) = sp.node_port {
            nodeports.push(mapping(
                vec![s(proto), Expression::Number(np.into())],
                &ext_chain,
            ));
        }

        // Endpoint chains first: the service chain's vmap refers to them.
        let mut targets = Vec::new();
        for ep in &sp.endpoints {
            let ep_chain = endpoint_chain(sp, ep);
            tx.fresh_chain(&ep_chain);
            // Hairpin: a pod reaching itself must see another source.
            tx.rule(
                &ep_chain,
                vec![
                    matches(payload("ip", "saddr"), Operator::EQ, s(ep.ip.to_string())),
                    jump(MARK_FOR_MASQUERADE),
                ],
            );
            if let Some(timeout) = sp.affinity_timeout {
                let set = affinity_set(sp, ep);
                // Added once, never flushed (that would forget the clients'
                // affinity): nft adds flags of its own (dynamic), so a
                // second `add` would differ and fail.
                if !p.existing_sets.contains(&set) {
                    let def = tx.affinity(&set, timeout);
                    tx.b.add(NfListObject::Set(Box::new(def)));
                }
                tx.rule(
                    &ep_chain,
                    vec![Statement::Set(nftables::stmt::Set {
                        op: SetOp::Update,
                        elem: payload("ip", "saddr"),
                        set: Cow::Owned(format!("@{set}")),
                    })],
                );
                sets.insert(set);
            }
            tx.rule(
                &ep_chain,
                vec![
                    matches(meta(MetaKey::L4proto), Operator::EQ, s(proto)),
                    dnat(ep.ip, ep.port),
                ],
            );
            targets.push(ep_chain.clone());
            chains.insert(ep_chain);
        }

        tx.fresh_chain(&svc_chain);
        let (net, len) = p.cluster_cidr;
        // Off-cluster clients (the host, other machines) are masqueraded
        // so the endpoint's reply comes back through this node.
        tx.rule(
            &svc_chain,
            vec![
                matches(payload("ip", "saddr"), Operator::NEQ, prefix(net, len)),
                jump(MARK_FOR_MASQUERADE),
            ],
        );
        if sp.affinity_timeout.is_some() {
            for (ep, target) in sp.endpoints.iter().zip(&targets) {
                tx.rule(
                    &svc_chain,
                    vec![
                        matches(
                            payload("ip", "saddr"),
                            Operator::EQ,
                            s(format!("@{}", affinity_set(sp, ep))),
                        ),
                        goto(target),
                    ],
                );
            }
        }
        let items: Vec<SetItem<'static>> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| SetItem::Mapping(Expression::Number(i as u32), goto_verdict(t)))
            .collect();
        tx.rule(
            &svc_chain,
            vec![Statement::VerdictMap(VerdictMap {
                key: Expression::Named(NamedExpression::Numgen(Numgen {
                    mode: NgMode::Random,
                    ng_mod: targets.len() as u32,
                    offset: None,
                })),
                data: Expression::Named(NamedExpression::Set(items)),
            })],
        );
        chains.insert(svc_chain.clone());

        if external {
            tx.fresh_chain(&ext_chain);
            tx.rule(&ext_chain, vec![jump(MARK_FOR_MASQUERADE)]);
            tx.rule(&ext_chain, vec![goto(&svc_chain)]);
            chains.insert(ext_chain);
        }
    }
    tx.elements(SERVICE_IPS, service_ips);
    tx.elements(NO_ENDPOINT_SERVICES, no_ep_services);
    tx.elements(SERVICE_NODEPORTS, nodeports);
    tx.elements(NO_ENDPOINT_NODEPORTS, no_ep_nodeports);
    Built {
        nft: tx.b.to_nftables(),
        chains,
        sets,
    }
}

/// Deletes per-service chains and affinity sets nothing refers to any more.
/// Flushing every chain first drops their jumps to one another, so the
/// deletes succeed in any order.
pub fn cleanup(table_name: &str, chains: &[String], sets: &[String]) -> Nftables<'static> {
    let mut tx = Tx {
        b: Batch::new(),
        table: table_name.to_string(),
    };
    for c in chains {
        tx.b.add_cmd(NfCmd::Flush(FlushObject::Chain(tx.chain(c))));
    }
    for c in chains {
        tx.b.delete(NfListObject::Chain(tx.chain(c)));
    }
    for name in sets {
        let set = Set {
            flags: None,
            timeout: None,
            ..tx.affinity(name, 0)
        };
        tx.b.delete(NfListObject::Set(Box::new(set)));
    }
    tx.b.to_nftables()
}

/// Removes the whole table, if present, in one transaction.
pub fn delete_table(name: &str) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(name)));
    b.delete(NfListObject::Table(table(name)));
    b.to_nftables()
}

/// Whether `name` is one of the per-service objects this module creates
/// (and so may delete when stale).
pub fn is_service_object(name: &str) -> bool {
    ["service-", "external-", "endpoint-", "affinity-"]
        .iter()
        .any(|p| name.starts_with(p))
}
