//! `cache`: the FDB and neighbour entries of our VXLAN devices, kept up to
//! date from the netlink notifications [`changes`](super::changes) reads.
//!
//! At 20,000 entries a dump costs 10-20 ms of kernel time, most of a pass
//! that adds one endpoint; the notifications that announce every change cost
//! next to nothing. So a full dump fills this cache and the notifications
//! after it keep it right, and `observe_cached` answers from it. The design
//! decision: the cache only says what it knows. Whatever it cannot follow
//! for sure (lost notifications, a unicast MAC announced with a second
//! destination, which the kernel sends alike for replace and append, a device
//! it never saw filled) makes it invalid, and the next observe dumps again.
//! The periodic resync always dumps.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use ovnet_ipam_store::Mac;

use super::wire::Entry;
use crate::model::{FdbEntry, NeighEntry};

const RTM_NEWNEIGH: u16 = 28;

/// The entries of one VXLAN device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct DeviceEntries {
    pub fdb: BTreeSet<FdbEntry>,
    pub neigh: BTreeSet<NeighEntry>,
}

/// Entries by VXLAN device index.
#[derive(Debug, Default)]
pub(super) struct Cache {
    devices: HashMap<u32, DeviceEntries>,
    valid: bool,
    /// Set while a dump runs: the notifications read meanwhile, replayed on
    /// top of the dump (each key then ends as its last notification says).
    log: Option<Vec<(u16, Entry)>>,
}

impl Cache {
    /// Whether the cache can vouch for what it holds (it was filled by a
    /// dump and has followed every notification since).
    pub(super) fn is_valid(&self) -> bool {
        self.valid
    }

    /// The entries of `index`, if the cache can vouch for them.
    pub(super) fn get(&self, index: u32) -> Option<&DeviceEntries> {
        self.devices.get(&index).filter(|_| self.valid)
    }

    /// A dump starts: from now on notifications are also logged for it.
    pub(super) fn start_fill(&mut self) {
        self.log = Some(Vec::new());
    }

    /// The dump's result replaces the cache; what was logged since it
    /// started is applied on top. Without `start_fill` (or after a loss) the
    /// cache stays invalid.
    pub(super) fn fill(&mut self, dumped: HashMap<u32, DeviceEntries>) {
        let Some(log) = self.log.take() else {
            self.valid = false;
            return;
        };
        self.devices = dumped;
        self.valid = true;
        for (kind, e) in &log {
            self.apply(*kind, e);
        }
    }

    /// A VXLAN device appeared (empty, as every new device is) or went away.
    pub(super) fn device(&mut self, index: u32, present: bool) {
        if present {
            self.devices.entry(index).or_default();
        } else {
            self.devices.remove(&index);
        }
    }

    /// Notifications were lost: nothing can be vouched for until the next dump.
    pub(super) fn lost(&mut self) {
        self.valid = false;
        self.log = None;
    }

    /// A neighbour notification (`kind` RTM_NEWNEIGH or RTM_DELNEIGH) on one
    /// of our VXLAN devices.
    pub(super) fn notified(&mut self, kind: u16, e: Entry) {
        self.apply(kind, &e);
        if let Some(log) = self.log.as_mut() {
            log.push((kind, e));
        }
    }

    fn apply(&mut self, kind: u16, e: &Entry) {
        let Some(dev) = self.devices.get_mut(&e.header.ifindex) else {
            return;
        };
        let new = kind == RTM_NEWNEIGH;
        match e.header.family {
            AddressFamily::Bridge => {
                let flags = e.header.flags;
                if !flags.contains(NeighbourFlags::Own) || flags.contains(NeighbourFlags::Controller) {
                    return;
                }
                let (Some(mac), Some(dst)) = (e.mac, e.ip) else { return };
                let entry = FdbEntry { mac, dst };
                if !new {
                    dev.fdb.remove(&entry);
                    return;
                }
                let same_mac =
                    FdbEntry { mac, dst: Ipv4Addr::UNSPECIFIED }..=FdbEntry { mac, dst: Ipv4Addr::BROADCAST };
                let moved = mac != Mac::ZERO && dev.fdb.range(same_mac).any(|f| f.dst != dst);
                if moved {
                    // Replaced or appended: the notification does not say.
                    self.valid = false;
                }
                dev.fdb.insert(entry);
            }
            AddressFamily::Inet => {
                let Some(ip) = e.ip else { return };
                let same_ip = NeighEntry { ip, mac: Mac([0; 6]) }..=NeighEntry { ip, mac: Mac([0xff; 6]) };
                let stale: Vec<NeighEntry> = dev.neigh.range(same_ip).copied().collect();
                for n in &stale {
                    dev.neigh.remove(n);
                }
                if let (true, NeighbourState::Permanent, Some(mac)) = (new, e.header.state, e.mac) {
                    dev.neigh.insert(NeighEntry { ip, mac });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::neighbour::NeighbourHeader;

    use super::*;

    const DEL: u16 = 29;

    fn fdb(ifindex: u32, mac: Mac, dst: [u8; 4]) -> Entry {
        let header = NeighbourHeader {
            family: AddressFamily::Bridge,
            ifindex,
            state: NeighbourState::Permanent,
            flags: NeighbourFlags::Own,
            ..Default::default()
        };
        Entry { header, mac: Some(mac), ip: Some(dst.into()) }
    }

    fn neigh(ifindex: u32, state: NeighbourState, ip: [u8; 4], mac: Option<Mac>) -> Entry {
        let header = NeighbourHeader { family: AddressFamily::Inet, ifindex, state, ..Default::default() };
        Entry { header, mac, ip: Some(ip.into()) }
    }

    fn filled() -> Cache {
        let mut c = Cache::default();
        c.start_fill();
        c.fill(HashMap::from([(5, DeviceEntries::default())]));
        c
    }

    const MAC: Mac = Mac([2, 0x42, 10, 0, 0, 9]);

    #[test]
    fn notifications_keep_entries_right() {
        let mut c = filled();
        c.notified(RTM_NEWNEIGH, fdb(5, Mac::ZERO, [192, 0, 2, 2]));
        c.notified(RTM_NEWNEIGH, fdb(5, Mac::ZERO, [192, 0, 2, 3]));
        c.notified(RTM_NEWNEIGH, fdb(5, MAC, [192, 0, 2, 2]));
        c.notified(DEL, fdb(5, Mac::ZERO, [192, 0, 2, 3]));
        c.notified(RTM_NEWNEIGH, neigh(5, NeighbourState::Permanent, [10, 0, 0, 9], Some(MAC)));
        c.notified(RTM_NEWNEIGH, neigh(5, NeighbourState::Permanent, [10, 0, 0, 8], Some(MAC)));
        // `ip neigh del`: FAILED, then deleted.
        c.notified(RTM_NEWNEIGH, neigh(5, NeighbourState::Failed, [10, 0, 0, 8], None));
        c.notified(DEL, neigh(5, NeighbourState::Failed, [10, 0, 0, 8], None));
        // Not ours to count: another device, the bridge's own entries.
        c.notified(RTM_NEWNEIGH, fdb(6, MAC, [192, 0, 2, 2]));
        let mut master = fdb(5, MAC, [192, 0, 2, 9]);
        master.header.flags = NeighbourFlags::Controller;
        c.notified(RTM_NEWNEIGH, master);

        let dev = c.get(5).expect("valid");
        let want_fdb = [
            FdbEntry { mac: Mac::ZERO, dst: [192, 0, 2, 2].into() },
            FdbEntry { mac: MAC, dst: [192, 0, 2, 2].into() },
        ];
        assert_eq!(dev.fdb, BTreeSet::from(want_fdb));
        assert_eq!(dev.neigh, BTreeSet::from([NeighEntry { ip: [10, 0, 0, 9].into(), mac: MAC }]));
        assert!(c.get(6).is_none());
    }

    #[test]
    fn what_it_cannot_follow_makes_it_invalid() {
        let mut c = filled();
        c.notified(RTM_NEWNEIGH, fdb(5, MAC, [192, 0, 2, 2]));
        c.notified(RTM_NEWNEIGH, fdb(5, MAC, [192, 0, 2, 3]));
        assert!(c.get(5).is_none(), "replaced or appended?");

        let mut c = filled();
        c.lost();
        assert!(c.get(5).is_none());
        c.fill(HashMap::from([(5, DeviceEntries::default())]));
        assert!(c.get(5).is_none(), "a fill needs its start");
        assert!(Cache::default().get(5).is_none(), "never filled");
        assert!(!Cache::default().is_valid(), "never filled, even without devices");
    }

    #[test]
    fn changes_during_a_dump_are_replayed_on_it() {
        let mut c = Cache::default();
        c.device(5, true);
        c.start_fill();
        // The dump may or may not show these; the notifications decide.
        c.notified(RTM_NEWNEIGH, fdb(5, Mac::ZERO, [192, 0, 2, 2]));
        c.notified(DEL, fdb(5, Mac::ZERO, [192, 0, 2, 3]));
        let dumped = DeviceEntries {
            fdb: BTreeSet::from([FdbEntry { mac: Mac::ZERO, dst: [192, 0, 2, 3].into() }]),
            neigh: BTreeSet::new(),
        };
        c.fill(HashMap::from([(5, dumped)]));
        let want = BTreeSet::from([FdbEntry { mac: Mac::ZERO, dst: [192, 0, 2, 2].into() }]);
        assert_eq!(c.get(5).expect("valid").fdb, want);
        c.device(5, false);
        assert!(c.get(5).is_none());
    }
}
