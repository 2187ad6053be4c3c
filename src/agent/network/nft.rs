//! The node's own nftables table: masquerade for pod traffic leaving the
//! cluster, and forward accepts for the bridge. Applied through `nft -j`.

use std::borrow::Cow;

use anyhow::{Context, Result};
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::ipam::Cidr;

/// Numeric srcnat priority: nft 1.0.6 rejects named priorities in some hooks.
const PRIO_SRCNAT: i32 = 100;
const PRIO_FILTER: i32 = 0;

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
pub fn ruleset(name: &str, bridge: &str, pod: Cidr, cluster: Cidr) -> Nftables<'static> {
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
    b.to_nftables()
}

/// Deletes the table if present, in one transaction.
pub fn delete(name: &str) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(name)));
    b.delete(NfListObject::Table(table(name)));
    b.to_nftables()
}

fn nft_program() -> &'static str {
    // PATH may lack /usr/sbin when started from a user session.
    if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

pub async fn apply(rules: Nftables<'static>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        nftables::helper::apply_ruleset_with_args(
            &rules,
            Some(nft_program()),
            nftables::helper::DEFAULT_ARGS,
        )
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
    .context("applying nftables ruleset")
}
