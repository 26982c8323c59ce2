//! `facts`: what the doctor checks beyond the planner's view.
//!
//! Offload features come from the ethtool generic-netlink family (`ethtool -k
//! DEV`), the bound UDP ports from `/proc/thread-self/net/udp{,6}` read inside
//! the namespace (`ss -uln`), the VXLAN `udpcsum` flag from the link dump.
//! Every source is read on its own and reports its own error: a kernel
//! without ethtool netlink (before 5.6) still gets the other checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures::StreamExt;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};

use super::link_by_name;
use crate::dataplane::{DataplaneError, DeviceFacts, HostFacts};
use crate::netns;

/// Gathers the facts of `devices` in the namespace `netns` (None: ours).
pub(super) async fn facts(h: &rtnetlink::Handle, netns: Option<PathBuf>, devices: Vec<String>) -> HostFacts {
    let mut features = match ethtool_handle(netns.clone()).await {
        Ok(mut ethtool) => {
            let mut out = BTreeMap::new();
            for dev in &devices {
                out.insert(dev.clone(), active_features(&mut ethtool, dev).await);
            }
            out
        }
        Err(e) => devices.iter().map(|d| (d.clone(), Err(e.to_string()))).collect(),
    };
    let mut out = BTreeMap::new();
    for dev in devices {
        let udp_csum = vxlan_udp_csum(h, &dev).await;
        let features = features.remove(&dev).unwrap_or_else(|| Err("not read".into()));
        out.insert(dev, DeviceFacts { features, udp_csum });
    }
    HostFacts {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("reading /proc/sys/kernel/osrelease: {e}")),
        udp_ports: udp_ports(netns).await,
        devices: out,
    }
}

/// An ethtool netlink handle in the namespace; its connection runs on the
/// current runtime until the handle is dropped.
async fn ethtool_handle(netns: Option<PathBuf>) -> Result<ethtool::EthtoolHandle, DataplaneError> {
    let opened = match &netns {
        Some(path) => netns::open_in_netns(path, ethtool::new_connection).await?,
        None => ethtool::new_connection()
            .map_err(|e| DataplaneError::Other(format!("opening an ethtool netlink socket: {e}")))?,
    };
    let (connection, handle, _) = opened;
    tokio::spawn(connection);
    Ok(handle)
}

/// `ethtool -k DEV`: the names of the active features.
async fn active_features(h: &mut ethtool::EthtoolHandle, dev: &str) -> Result<BTreeSet<String>, String> {
    let failed = |e: ethtool::EthtoolError| format!("ethtool -k {dev}: {e}");
    let mut replies = h.feature().get(Some(dev)).execute().await.map_err(failed)?;
    let mut active = BTreeSet::new();
    while let Some(reply) = replies.next().await {
        for attr in reply.map_err(failed)?.payload.nlas {
            if let ethtool::EthtoolAttr::Feature(ethtool::EthtoolFeatureAttr::Active(bits)) = attr {
                active.extend(bits.into_iter().filter(|b| b.value).map(|b| b.name));
            }
        }
    }
    Ok(active)
}

/// `udpcsum` of a VXLAN device (`ip -d link show DEV`); `None` for others.
async fn vxlan_udp_csum(h: &rtnetlink::Handle, dev: &str) -> Option<bool> {
    let link = link_by_name(h, dev).await.ok()??;
    let infos = link.attributes.iter().filter_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    });
    infos.flatten().find_map(|info| match info {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(
            data.iter()
                .find_map(|d| match d {
                    InfoVxlan::UDPCsum(on) => Some(*on),
                    _ => None,
                })
                .unwrap_or(false),
        ),
        _ => None,
    })
}

/// Local ports of the UDP sockets of the namespace.
async fn udp_ports(netns: Option<PathBuf>) -> Result<BTreeSet<u16>, String> {
    let read = || -> Result<BTreeSet<u16>, String> {
        let mut ports = BTreeSet::new();
        for file in ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"] {
            match std::fs::read_to_string(file) {
                Ok(text) => ports.extend(parse_proc_udp(&text)),
                // No IPv6 in this kernel: no IPv6 sockets.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.ends_with('6') => {}
                Err(e) => return Err(format!("reading {file}: {e}")),
            }
        }
        Ok(ports)
    };
    let joined = tokio::task::spawn_blocking(move || match netns {
        Some(path) => netns::run_in_netns(&path, read).map_err(|e| e.to_string())?,
        None => read(),
    });
    joined.await.map_err(|e| format!("reading the UDP sockets: {e}"))?
}

/// The local ports in `/proc/net/udp` text: `sl local_address:PORT ...`, hex.
fn parse_proc_udp(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let local = line.split_whitespace().nth(1)?;
        let (_, port) = local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_udp() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n 2187: 00000000:12B5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 108248 2 000000003ea96fb7 0\n   12: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n";
        assert_eq!(parse_proc_udp(text).collect::<Vec<_>>(), vec![4789, 53]);
        let v6 = "  sl  local_address                         remote_address                        st\n    5: 00000000000000000000000000000000:12B5 00000000000000000000000000000000:0000 07\n";
        assert_eq!(parse_proc_udp(v6).collect::<Vec<_>>(), vec![4789]);
    }
}
