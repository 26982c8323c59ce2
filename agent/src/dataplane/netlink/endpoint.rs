//! `attach`: plumbs a local endpoint into a container namespace with a veth
//! pair (the CNI bridge plugin's job).
//!
//! The container end is created here under a temporary name, moved into the
//! namespace by fd, and configured through a second netlink socket opened
//! inside that namespace. Whatever fails, deleting the host end removes the
//! whole pair, wherever its peer went, so cleanup is one call. Each change is
//! logged once at info, after it succeeded, as the iproute2 command it equals.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::ops::{delete_existing_link, delete_link};
use super::underlay::default_routes;
use super::{index_of, ok_if_exists};
use crate::dataplane::{AttachSpec, DataplaneError};
use crate::netns;

type Handle = rtnetlink::Handle;

/// Creates and configures the pair; on failure removes what it created.
///
/// A pair left with the same host name by an interrupted attach of the same
/// endpoint is replaced, so a retried attach succeeds.
pub(super) async fn attach(h: &Handle, spec: &AttachSpec) -> Result<(), DataplaneError> {
    // Opening the socket inside first gives a clear error for a bad path
    // before anything is created.
    let inner = netns::handle_in_netns(&spec.netns).await?;
    let ns_file = netns::open_netns(&spec.netns)?;
    let bridge = index_of(h, &spec.bridge).await.map_err(netlink(format!("ip link show {}", spec.bridge)))?;
    let bridge =
        bridge.ok_or_else(|| DataplaneError::Other(format!("bridge {} does not exist", spec.bridge)))?;
    let (host, temp) = (&spec.host_ifname, &spec.temp_ifname);
    for stale in [host, temp] {
        let what = format!("ip link del {stale}");
        if delete_existing_link(h, stale).await.map_err(netlink(what.clone()))? {
            changed(&what);
        }
    }
    let veth = LinkVeth::new(host, temp).mtu(spec.mtu).build();
    let what = format!("ip link add {host} mtu {} type veth peer name {temp}", spec.mtu);
    h.link().add(veth).execute().await.map_err(netlink(what.clone()))?;
    changed(&what);

    let Err(err) = plumb(h, &inner, ns_file.as_raw_fd(), bridge, spec).await else {
        return Ok(());
    };
    // Deleting the host end takes the peer with it, wherever it went.
    match delete_link(h, host).await {
        Ok(()) => changed(&format!("ip link del {host}")),
        Err(e) => tracing::warn!(error = %e, "cleaning up veth {host} after a failed attach"),
    }
    Err(err)
}

/// Moves the container end, configures both ends.
async fn plumb(
    h: &Handle,
    inner: &Handle,
    ns_fd: i32,
    bridge: u32,
    spec: &AttachSpec,
) -> Result<(), DataplaneError> {
    let (host, temp, ns) = (&spec.host_ifname, &spec.temp_ifname, spec.netns.display());
    let to_ns = LinkUnspec::new_with_name(temp).setns_by_fd(ns_fd).build();
    let what = format!("ip link set {temp} netns {ns}");
    h.link().set(to_ns).execute().await.map_err(netlink(what.clone()))?;
    changed(&what);

    configure_container_end(inner, spec).await?;

    let host_end = LinkUnspec::new_with_name(host).mtu(spec.mtu).controller(bridge).up().build();
    let what = format!("ip link set {host} mtu {} master {} up", spec.mtu, spec.bridge);
    h.link().set(host_end).execute().await.map_err(netlink(what.clone()))?;
    changed(&what);
    Ok(())
}

/// Inside the namespace: name, MAC, MTU, address, up, `lo` up, default route.
async fn configure_container_end(inner: &Handle, spec: &AttachSpec) -> Result<(), DataplaneError> {
    let (temp, ifname, ns) = (&spec.temp_ifname, &spec.ifname, spec.netns.display());
    let index = index_of(inner, temp).await.map_err(netlink(format!("ip -n {ns} link show {temp}")))?;
    let index = index.ok_or_else(|| DataplaneError::Other(format!("{temp} did not arrive in {ns}")))?;

    let what = format!("ip -n {ns} link set {temp} name {ifname} address {} mtu {}", spec.mac, spec.mtu);
    let set =
        LinkUnspec::new_with_index(index).name(ifname.clone()).address(spec.mac.0.to_vec()).mtu(spec.mtu);
    inner.link().set(set.build()).execute().await.map_err(netlink(what.clone()))?;
    changed(&what);

    let addr = inner.address().add(index, IpAddr::V4(spec.addr.addr()), spec.addr.prefix_len());
    let what = format!("ip -n {ns} addr add {} dev {ifname}", spec.addr);
    ok_if_exists(addr.execute().await).map_err(netlink(what.clone()))?;
    changed(&what);

    let up = LinkUnspec::new_with_index(index).up().build();
    let what = format!("ip -n {ns} link set {ifname} up");
    inner.link().set(up).execute().await.map_err(netlink(what.clone()))?;
    changed(&what);
    let lo = LinkUnspec::new_with_name("lo").up().build();
    let what = format!("ip -n {ns} link set lo up");
    inner.link().set(lo).execute().await.map_err(netlink(what.clone()))?;
    changed(&what);

    if default_routes(inner).await?.is_empty() {
        let what = format!("ip -n {ns} route add default via {} dev {ifname}", spec.gateway);
        add_default_route(inner, index, spec.gateway).await.map_err(netlink(what.clone()))?;
        changed(&what);
    }
    Ok(())
}

/// Logs one change made to the kernel, once, as the iproute2 command it equals.
fn changed(what: &str) {
    tracing::info!("{what}");
}

/// `ip route add default via GATEWAY dev INDEX`.
async fn add_default_route(inner: &Handle, index: u32, gateway: Ipv4Addr) -> Result<(), rtnetlink::Error> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    ok_if_exists(inner.route().add(route).execute().await)
}

/// Maps a netlink failure into an error naming the iproute2 command.
fn netlink(what: String) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    move |source| DataplaneError::Netlink { what, source }
}
