//! The Docker remote plugin `ovnet`: a `NetworkDriver` and an `IpamDriver`
//! served over HTTP on a unix socket that dockerd finds in
//! /run/docker/plugins.
//!
//! The design decision: a docker network of driver `ovnet` is a view of one
//! ovnet network, per host; the plugin keeps no state of its own in memory
//! that a restart would lose: the NetworkID -> ovnet network mapping and
//! every endpoint live in etcd.

/// Where dockerd looks for the plugin `ovnet`.
pub const DEFAULT_SOCKET: &str = "unix:///run/docker/plugins/ovnet.sock";

// The agent's side of dockerd's Engine API (`--docker-sync`): `engine`
// talks to dockerd, `mirror` keeps dockerd's `ovnet` networks equal to
// ovnet's, `janitor` keeps this host's Docker endpoint records equal to
// the endpoints dockerd has.
pub mod engine;
pub mod janitor;
pub mod mirror;
