//! The agent's nftables table `inet ovnet`, written whole with `nft -j -f -`
//! and read back with `nft -j list table inet ovnet` (the `nftables` crate's
//! JSON schema over the `nft` binary).
//!
//! The design decision: the agent owns the table entirely and never edits
//! it in place. A write is one transaction that deletes and recreates it
//! (`add table; delete table; add table; add chain; add rule...`), so a
//! missing, partial or hand-edited table is replaced whole, nothing is ever
//! seen half-written, and no other table is touched. A read maps the table
//! back to a [`Firewall`] only when it is exactly what [`batch`] writes
//! (counter values aside); anything else is `Altered`, which the planner
//! rewrites. [`batch`] and [`parse`] are pure; [`read`] and [`write`] run
//! `nft` on a blocking thread, inside the dataplane's namespace.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::PathBuf;

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::DataplaneError;
use crate::model::{DEVICE_PREFIX, FIREWALL_CHAIN, FIREWALL_TABLE, Firewall, FirewallState};
use crate::netns;

/// `inet ovnet`, as the crate names it.
fn table() -> Table<'static> {
    Table { family: NfFamily::INet, name: FIREWALL_TABLE.into(), handle: None }
}

/// The base chain: `type filter hook forward priority filter; policy accept;`.
fn chain() -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: FIREWALL_TABLE.into(),
        name: FIREWALL_CHAIN.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Forward),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

/// `meta KEY OP "VALUE"`.
fn meta_match(key: MetaKey, op: Operator, value: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key })),
        right: Expression::String(Cow::Owned(value.to_string())),
        op,
    })
}

/// `iifname "BRIDGE" oifname "ovbr*" oifname != "BRIDGE" counter drop`: what
/// the bridge routes into another network's bridge is dropped.
fn isolate(bridge: &str) -> Vec<Statement<'static>> {
    vec![
        meta_match(MetaKey::Iifname, Operator::EQ, bridge),
        meta_match(MetaKey::Oifname, Operator::EQ, &format!("{DEVICE_PREFIX}br*")),
        meta_match(MetaKey::Oifname, Operator::NEQ, bridge),
        Statement::Counter(Counter::Anonymous(None)),
        Statement::Drop(None),
    ]
}

/// The transaction that replaces the table with `fw` (see `Op::SyncFirewall`).
pub fn batch(fw: &Firewall) -> Nftables<'static> {
    let mut b = nftables::batch::Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.add(NfListObject::Table(table()));
    b.add(NfListObject::Chain(chain()));
    for bridge in &fw.isolated {
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: FIREWALL_TABLE.into(),
            chain: FIREWALL_CHAIN.into(),
            expr: isolate(bridge).into(),
            ..Rule::default()
        }));
    }
    b.to_nftables()
}

/// What the output of `nft -j list table inet ovnet` says the table holds.
pub fn parse_listing(json: &str) -> FirewallState {
    match serde_json::from_str::<Nftables>(json) {
        Ok(nft) => parse(&nft),
        Err(e) => FirewallState::Altered(format!("it holds rules the agent cannot read ({e})")),
    }
}

/// What a listing of the table holds: `Rules` only when it is exactly what
/// [`batch`] writes, whatever the order of its rules and their counters.
pub fn parse(nft: &Nftables) -> FirewallState {
    let (mut table_seen, mut chain_seen) = (false, false);
    let mut isolated = BTreeSet::new();
    let mut odd: Vec<String> = Vec::new();
    for obj in nft.objects.iter() {
        let NfObject::ListObject(obj) = obj else {
            odd.push("a command".into());
            continue;
        };
        match obj {
            NfListObject::MetainfoObject(_) => {}
            NfListObject::Table(t) if t.family == NfFamily::INet && t.name == FIREWALL_TABLE => {
                table_seen = true
            }
            NfListObject::Chain(c) if !chain_seen && same_chain(c) => chain_seen = true,
            NfListObject::Chain(c) => odd.push(format!("chain {}", c.name)),
            NfListObject::Rule(r) => match isolated_bridge(r) {
                Some(bridge) if isolated.insert(bridge.clone()) => {}
                Some(bridge) => odd.push(format!("a second rule for {bridge}")),
                None => odd.push(format!("a rule of its own in chain {}", r.chain)),
            },
            _ => odd.push("an object other than a chain or rule".into()),
        }
    }
    if !table_seen {
        return FirewallState::Missing;
    }
    if !chain_seen {
        return FirewallState::Altered(format!(
            "its chain {FIREWALL_CHAIN} is missing or not a forward filter chain with policy accept"
        ));
    }
    if !odd.is_empty() {
        return FirewallState::Altered(format!("it holds {}", odd.join(", ")));
    }
    FirewallState::Rules(Firewall { isolated })
}

/// Whether `c` is the base chain [`chain`] makes (handles aside).
fn same_chain(c: &Chain) -> bool {
    let want = chain();
    c.table == want.table
        && c.name == want.name
        && c._type == want._type
        && c.hook == want.hook
        && c.prio == want.prio
        && c.policy == want.policy
}

/// The bridge a rule isolates, when it is exactly an [`isolate`] rule.
fn isolated_bridge(r: &Rule) -> Option<String> {
    if r.chain != FIREWALL_CHAIN {
        return None;
    }
    let Some(Statement::Match(Match { right: Expression::String(bridge), .. })) = r.expr.first() else {
        return None;
    };
    let without_counts: Vec<Statement> = r
        .expr
        .iter()
        .map(|s| match s {
            Statement::Counter(Counter::Anonymous(_)) => Statement::Counter(Counter::Anonymous(None)),
            other => other.clone(),
        })
        .collect();
    (without_counts == isolate(bridge)).then(|| bridge.to_string())
}

/// Reads the table (`nft -j list table inet ovnet`) in the namespace at
/// `netns` (the agent's own when `None`).
pub async fn read(netns: Option<PathBuf>) -> FirewallState {
    let args = ["list", "table", "inet", FIREWALL_TABLE];
    let listed =
        on_blocking_thread(netns, move || helper::get_current_ruleset_raw(helper::DEFAULT_NFT, &args));
    match listed.await {
        Ok(Ok(json)) => parse_listing(&json),
        Ok(Err(NftablesError::NftFailed { stderr, .. })) if stderr.contains("No such file or directory") => {
            FirewallState::Missing
        }
        Ok(Err(e)) => FirewallState::Unreadable(describe(&e)),
        Err(e) => FirewallState::Unreadable(e.to_string()),
    }
}

/// Replaces the table with `fw` in one transaction (`nft -j -f -`).
pub async fn write(netns: Option<PathBuf>, fw: &Firewall) -> Result<(), DataplaneError> {
    let payload = serde_json::to_string(&batch(fw))
        .map_err(|e| DataplaneError::Firewall(format!("encoding the nftables batch: {e}")))?;
    let applied = on_blocking_thread(netns, move || {
        helper::apply_ruleset_raw(&payload, helper::DEFAULT_NFT, helper::DEFAULT_ARGS)
    });
    match applied.await? {
        Ok(_) => Ok(()),
        Err(e) => Err(DataplaneError::Firewall(describe(&e))),
    }
}

/// An `nft` failure in words, with its stderr.
fn describe(e: &NftablesError) -> String {
    match e {
        NftablesError::NftExecution { program, inner } => {
            format!("cannot run {}: {inner} (is the nftables package installed?)", program.to_string_lossy())
        }
        NftablesError::NftFailed { program, stderr, .. } => {
            format!("{} failed: {}", program.to_string_lossy(), stderr.trim())
        }
        other => other.to_string(),
    }
}

/// Runs the blocking `f` (which starts `nft`) off the tokio workers: on the
/// blocking pool, or, for another namespace, on a thread inside it (a child
/// process starts in the namespace of the thread that forks it).
async fn on_blocking_thread<T, F>(netns: Option<PathBuf>, f: F) -> Result<T, DataplaneError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match netns {
        None => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| DataplaneError::Firewall(format!("the nft task failed: {e}"))),
        Some(path) => netns::open_in_netns(&path, move || Ok(f())).await,
    }
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
