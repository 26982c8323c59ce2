//! `nft`: the table `inet ovnet` read and written over the dataplane's own
//! NETLINK_NETFILTER socket, with the messages [`firewall`] builds and
//! parses. A write is one nf_tables transaction in one `sendmsg`; a read
//! is three dumps (tables, chains, rules of family `inet`).

use netlink_packet_core::{NetlinkMessage, ParseableParametrized};
use netlink_packet_netfilter::nftables::{
    ChainMessage, NfTablesMessage, RuleAttribute, RuleMessage, TableMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use super::raw::{Raw, RawError};
use crate::dataplane::{DataplaneError, firewall};
use crate::model::{FIREWALL_TABLE, Firewall, FirewallState};

/// Replaces the table with `fw` in one transaction; the first failing
/// command, in words, when the kernel refuses it (then nothing changed).
pub(super) async fn write(sock: &Raw, fw: &Firewall) -> Result<(), DataplaneError> {
    let outcomes = sock.batch(firewall::batch(fw)).await;
    match outcomes.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some(e) => Err(DataplaneError::Firewall(format!(
            "nf_tables refused the table inet {FIREWALL_TABLE}: {}",
            words(&e)
        ))),
    }
}

/// What the kernel holds as the table.
pub(super) async fn read(sock: &Raw) -> FirewallState {
    let requests = [
        NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
        NfTablesMessage::GetChain(ChainMessage { attributes: vec![] }),
        NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(FIREWALL_TABLE.into())],
        }),
    ];
    let mut listing = Vec::new();
    for request in requests {
        let msg = NetlinkMessage::from(NetfilterMessage::new(firewall::inet(), request));
        let mut malformed = None;
        let dumped = sock
            .dump(msg, |kind, payload| match NetfilterMessage::parse_with_param(payload, kind) {
                Ok(NetfilterMessage { inner: NetfilterMessageInner::NfTables(m), .. }) => listing.push(m),
                Ok(_) => {}
                Err(e) => malformed = Some(e.to_string()),
            })
            .await;
        if let Err(e) = dumped {
            return FirewallState::Unreadable(format!("dumping nf_tables: {}", words(&e)));
        }
        if let Some(e) = malformed {
            return FirewallState::Unreadable(format!("a malformed nf_tables message: {e}"));
        }
    }
    firewall::parse(&listing)
}

fn words(e: &RawError) -> String {
    match e {
        RawError::Netlink(e) => e.to_string(),
        RawError::Io(why) => why.clone(),
    }
}
