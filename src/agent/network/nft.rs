//! The node's own nftables table: masquerade for pod traffic leaving the
//! cluster, forward accepts for the bridge, and the pods' hostPort DNATs.
//! Applied through `nft -j`.

use std::borrow::Cow;

use anyhow::{Context, Result};
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix,
};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::HostPort;
use super::ipam::Cidr;

/// Numeric priorities: nft 1.0.6 rejects named priorities in some hooks.
const PRIO_SRCNAT: i32 = 100;
const PRIO_DSTNAT: i32 = -100;
const PRIO_FILTER: i32 = 0;
/// Regular chain holding every pod's hostPort DNAT rules.
const HOSTPORTS: &str = "hostports";

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: Cow::Owned(name.to_string()),
        handle: None,
    }
}

fn addr_match(field: &'static str, op: Operator, cidr: Cidr) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "ip".into(),
                field: field.into(),
            },
        ))),
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(cidr.network.to_string().into())),
            len: cidr.prefix.into(),
        })),
        op,
    })
}

fn payload_match(protocol: &str, field: &str, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: Cow::Owned(protocol.to_string()),
                field: Cow::Owned(field.to_string()),
            },
        ))),
        right,
        op: Operator::EQ,
    })
}

/// `fib daddr type local`: addressed to this host (any of its addresses).
fn daddr_local() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: [FibFlag::Daddr].into_iter().collect(),
        })),
        right: Expression::String("local".into()),
        op: Operator::EQ,
    })
}

fn ifname_match(key: MetaKey, name: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key })),
        right: Expression::String(Cow::Owned(name.to_string())),
        op: Operator::EQ,
    })
}

fn base_chain(table: &str, name: &str, ty: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: Cow::Owned(table.to_string()),
        name: Cow::Owned(name.to_string()),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn rule(table: &str, chain: &str, expr: Vec<Statement<'static>>) -> Rule<'static> {
    Rule {
        family: NfFamily::IP,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Owned(chain.to_string()),
        expr: Cow::Owned(expr),
        ..Rule::default()
    }
}

/// The whole table as one transaction: add (so the delete cannot fail),
/// delete, recreate. Re-applying converges to exactly this content.
/// `host_ports` are (pod IP, mapping) pairs.
pub fn ruleset(
    name: &str,
    bridge: &str,
    pod: Cidr,
    cluster: Cidr,
    host_ports: &[(std::net::Ipv4Addr, HostPort)],
) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(name)));
    b.delete(NfListObject::Table(table(name)));
    b.add(NfListObject::Table(table(name)));
    b.add(NfListObject::Chain(base_chain(
        name,
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        PRIO_SRCNAT,
    )));
    // Host-local clients of a hostPort (127.0.0.1, DNATed in output) need a
    // source address the pod can answer.
    b.add(NfListObject::Rule(rule(
        name,
        "postrouting",
        vec![
            addr_match(
                "saddr",
                Operator::EQ,
                Cidr {
                    network: std::net::Ipv4Addr::new(127, 0, 0, 0),
                    prefix: 8,
                },
            ),
            ifname_match(MetaKey::Oifname, bridge),
            Statement::Masquerade(None),
        ],
    )));
    b.add(NfListObject::Rule(rule(
        name,
        "postrouting",
        vec![
            addr_match("saddr", Operator::EQ, pod),
            addr_match("daddr", Operator::NEQ, cluster),
            addr_match("daddr", Operator::NEQ, pod),
            Statement::Masquerade(None),
        ],
    )));
    // Accepts here cannot override a drop in another table, but they
    // document intent and cover hosts whose own tables jump by policy.
    b.add(NfListObject::Chain(base_chain(
        name,
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        PRIO_FILTER,
    )));
    for key in [MetaKey::Iifname, MetaKey::Oifname] {
        b.add(NfListObject::Rule(rule(
            name,
            "forward",
            vec![ifname_match(key, bridge), Statement::Accept(None)],
        )));
    }
    // hostPorts: traffic for any local address, arriving (prerouting) or
    // from the host itself (output), goes through one DNAT chain.
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: Cow::Owned(name.to_string()),
        name: Cow::Borrowed(HOSTPORTS),
        ..Chain::default()
    }));
    for (chain, hook) in [
        ("prerouting", NfHook::Prerouting),
        ("output", NfHook::Output),
    ] {
        b.add(NfListObject::Chain(base_chain(
            name,
            chain,
            NfChainType::NAT,
            hook,
            PRIO_DSTNAT,
        )));
        b.add(NfListObject::Rule(rule(
            name,
            chain,
            vec![
                daddr_local(),
                Statement::Jump(JumpTarget {
                    target: Cow::Borrowed(HOSTPORTS),
                }),
            ],
        )));
    }
    for (ip, hp) in host_ports {
        let mut expr = Vec::new();
        if let Some(host_ip) = hp.host_ip {
            expr.push(payload_match(
                "ip",
                "daddr",
                Expression::String(Cow::Owned(host_ip.to_string())),
            ));
        }
        expr.push(payload_match(
            &hp.protocol.to_ascii_lowercase(),
            "dport",
            Expression::Number(hp.host_port.into()),
        ));
        expr.push(Statement::DNAT(Some(NAT {
            addr: Some(Expression::String(Cow::Owned(ip.to_string()))),
            family: None,
            port: Some(Expression::Number(hp.container_port.into())),
            flags: None,
        })));
        b.add(NfListObject::Rule(rule(name, HOSTPORTS, expr)));
    }
    b.to_nftables()
}

/// Deletes the table if present, in one transaction.
pub fn delete(name: &str) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(name)));
    b.delete(NfListObject::Table(table(name)));
    b.to_nftables()
}

/// The nft binary (PATH may lack /usr/sbin when started from a user
/// session).
pub fn nft_program() -> &'static str {
    if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

pub async fn apply(rules: Nftables<'static>) -> Result<()> {
    let payload = serde_json::to_string(&rules).context("encoding nftables ruleset")?;
    apply_json(payload)
        .await
        .context("applying nftables ruleset")
}

/// Runs one nft transaction given as its JSON document (`nft -j -f -`).
pub async fn apply_json(payload: String) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        nftables::helper::apply_ruleset_raw(
            &payload,
            Some(nft_program()),
            nftables::helper::DEFAULT_ARGS,
        )
        .map(drop)
        .map_err(|e| match e {
            // The helper lets nft's stderr through to ours, so it is often empty.
            nftables::helper::NftablesError::NftFailed { stderr, .. } if !stderr.is_empty() => {
                anyhow::anyhow!("nft failed: {}", stderr.trim())
            }
            e => anyhow::Error::new(e),
        })
    })
    .await
    .context("nft task")?
}
