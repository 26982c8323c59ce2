//! Checks no etcd record describes: MTUs against the underlay, the VXLAN UDP
//! port, and checksum offload.
//!
//! The checksum check encodes one known kernel bug: before Linux 5.7, SNAT of
//! VXLAN packets (kube-proxy's `--random-fully` masquerade) left a bad outer
//! UDP checksum when tx checksum offload was on on the VXLAN device, and the
//! receiver dropped the packets silently (flannel's and Calico's "63-second
//! delay"; Calico turns the offload off on kernels before 5.7, and so does
//! the fix suggested here). On 5.7 and later the offload is fine.

use std::collections::BTreeSet;

use super::{Area, Finding, Inputs, Severity, count};
use crate::dataplane::DeviceFacts;
use crate::model::{LinkKind, VXLAN_OVERHEAD, VXLAN_PORT};

/// The first kernel with the fix for the VXLAN checksum bug.
pub const CHECKSUM_FIXED_IN: (u32, u32) = (5, 7);

/// Our devices' MTUs against the underlay's, minus VXLAN's overhead.
pub(super) fn mtu(inp: &Inputs, already: &BTreeSet<String>, out: &mut Vec<Finding>) {
    let u = &inp.underlay;
    let max = u.mtu.saturating_sub(VXLAN_OVERHEAD);
    let limit = format!("{} MTU {} - {VXLAN_OVERHEAD} bytes of VXLAN = {max}", u.ifname, u.mtu);
    if u.mtu != inp.planned_underlay_mtu {
        let msg = format!(
            "the underlay {} has MTU {}, but the agent plans with {} (read when it started): restart ovagent",
            u.ifname, u.mtu, inp.planned_underlay_mtu
        );
        out.push(Finding::new(Severity::Problem, Area::Mtu, msg).fix("systemctl restart ovagent"));
    }
    let mut fine = 0;
    for l in inp.observed.links.values() {
        if !matches!(l.kind, LinkKind::Bridge | LinkKind::Vxlan { .. } | LinkKind::Veth) {
            continue;
        }
        if l.mtu <= max {
            fine += 1;
        } else if !already.contains(&l.name) {
            let msg = format!(
                "MTU {} of {} is above the underlay's {limit}: larger packets are dropped",
                l.mtu, l.name
            );
            out.push(
                Finding::new(Severity::Problem, Area::Mtu, msg)
                    .fix(format!("ip link set {} mtu {max}", l.name)),
            );
        }
    }
    out.push(Finding::new(
        Severity::Ok,
        Area::Mtu,
        format!("{} the underlay: {limit}", count(fine, "device fits", "devices fit")),
    ));
}

/// The VXLAN devices' UDP socket: the kernel opens it on port 4789 when a
/// device goes up; without it every VXLAN packet to this host is dropped.
pub(super) fn vxlan_port(inp: &Inputs, out: &mut Vec<Finding>) {
    let vxlans: Vec<_> =
        inp.observed.links.values().filter(|l| matches!(l.kind, LinkKind::Vxlan { .. })).collect();
    if !vxlans.iter().any(|l| l.up) {
        let msg = format!("no VXLAN device is up here, so nothing listens on UDP {VXLAN_PORT} yet");
        out.push(Finding::new(Severity::Ok, Area::VxlanPort, msg));
        return;
    }
    let f = match &inp.facts.udp_ports {
        Ok(ports) if ports.contains(&VXLAN_PORT) => Finding::new(
            Severity::Ok,
            Area::VxlanPort,
            format!(
                "UDP port {VXLAN_PORT} (IANA VXLAN) is open for {}; firewalls between hosts must let it through",
                count(vxlans.len(), "VXLAN device", "VXLAN devices")
            ),
        ),
        Ok(_) => Finding::new(
            Severity::Problem,
            Area::VxlanPort,
            format!(
                "VXLAN devices are up but no UDP socket listens on port {VXLAN_PORT}: VXLAN packets to this host are dropped"
            ),
        ),
        Err(e) => Finding::new(
            Severity::Warning,
            Area::VxlanPort,
            format!("cannot tell whether UDP port {VXLAN_PORT} is open: {e}"),
        ),
    };
    out.push(f);
}

/// `(major, minor)` of a release such as `6.1.0-18-amd64`.
pub(super) fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Tx checksum offload of each VXLAN device against the kernel bug, and what
/// is known of the underlay's offloads.
pub(super) fn checksums(inp: &Inputs, out: &mut Vec<Finding>) {
    let release = inp.facts.kernel.as_ref().ok();
    if let Err(e) = &inp.facts.kernel {
        out.push(Finding::new(
            Severity::Warning,
            Area::Checksum,
            format!("cannot read the kernel version: {e}"),
        ));
    }
    let affected = release.and_then(|r| kernel_version(r)).map(|v| v < CHECKSUM_FIXED_IN);
    let kernel = release.map_or("unknown".to_string(), |r| r.clone());
    for l in inp.observed.links.values().filter(|l| matches!(l.kind, LinkKind::Vxlan { .. })) {
        match inp.facts.devices.get(&l.name) {
            Some(facts) => out.push(vxlan_checksum(&l.name, facts, affected, &kernel)),
            None => out.push(Finding::new(
                Severity::Warning,
                Area::Checksum,
                format!("the offload features of {} were not read", l.name),
            )),
        }
    }
    let u = &inp.underlay.ifname;
    match inp.facts.devices.get(u).map(|f| &f.features) {
        Some(Ok(active)) => {
            let tx = on_off(&tx_checksum(active));
            let tnl =
                on_off(&active.iter().filter(|f| f.starts_with("tx-udp_tnl")).cloned().collect::<Vec<_>>());
            let msg =
                format!("underlay {u}: tx checksum offload {tx}, UDP tunnel segmentation offload {tnl}");
            out.push(Finding::new(Severity::Ok, Area::Checksum, msg));
        }
        Some(Err(e)) => out.push(Finding::new(
            Severity::Warning,
            Area::Checksum,
            format!("cannot read the offload features of the underlay {u}: {e}"),
        )),
        None => {}
    }
}

fn vxlan_checksum(dev: &str, facts: &DeviceFacts, affected: Option<bool>, kernel: &str) -> Finding {
    let active = match &facts.features {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("cannot read the offload features of {dev}: {e}");
            return Finding::new(Severity::Warning, Area::Checksum, msg);
        }
    };
    let udp = match facts.udp_csum {
        Some(true) => ", outer UDP checksums on",
        Some(false) => ", outer UDP checksums off",
        None => "",
    };
    let tx = tx_checksum(active);
    if tx.is_empty() {
        return Finding::new(Severity::Ok, Area::Checksum, format!("{dev}: tx checksum offload off{udp}"));
    }
    let fix =
        format!("ethtool -K {dev} {}", tx.iter().map(|f| format!("{f} off")).collect::<Vec<_>>().join(" "));
    let on = format!("{dev}: tx checksum offload on ({}){udp}", tx.join(", "));
    let (fixed, want) = CHECKSUM_FIXED_IN;
    match affected {
        Some(false) => Finding::new(
            Severity::Ok,
            Area::Checksum,
            format!("{on}; kernel {kernel} has the VXLAN checksum fix of {fixed}.{want}"),
        ),
        Some(true) => Finding::new(
            Severity::Problem,
            Area::Checksum,
            format!(
                "{on} on kernel {kernel}: before {fixed}.{want}, SNAT of VXLAN packets leaves bad checksums and peers drop them silently"
            ),
        )
        .fix(fix),
        None => Finding::new(
            Severity::Warning,
            Area::Checksum,
            format!("{on} on kernel {kernel:?}, whose version is unknown: kernels before {fixed}.{want} drop such VXLAN packets under SNAT"),
        )
        .fix(fix),
    }
}

/// The active `tx-checksum-*` features.
fn tx_checksum(active: &BTreeSet<String>) -> Vec<String> {
    active.iter().filter(|f| f.starts_with("tx-checksum")).cloned().collect()
}

fn on_off(features: &[String]) -> String {
    if features.is_empty() { "off".into() } else { format!("on ({})", features.join(", ")) }
}
