//! ovagent, the per-host ovnet daemon, as a library: the binary in `main.rs`
//! only parses flags and waits for a signal.
//!
//! The shape: etcd watches keep a local snapshot of the cluster (`watch`);
//! `desired` turns it into what this host's kernel should hold; `plan`
//! compares that with what `dataplane` observes and returns operations; the
//! `reconcile` loop applies them. Watch events only wake the loop, so a missed
//! event or a hand-deleted entry is repaired on the next pass. `doctor`
//! compares the same two sides on request and explains every difference;
//! `metrics` and `http` report how the loop is doing. `liveness` holds a
//! vanished peer for a moment before its entries go; `leaks` finds endpoints
//! whose container died and veths nobody owns, which the loop cleans; `cni`
//! keeps a CNI conflist per network for podman and containerd; `dns`
//! answers the endpoints' names from the same watched snapshot.

pub mod api;
pub mod backoff;
pub mod cni;
pub mod config;
pub mod dataplane;
pub mod desired;
pub mod dns;
pub mod docker;
pub mod doctor;
pub mod endpoint;
pub mod error;
pub mod http;
pub mod leaks;
pub mod liveness;
pub mod local;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod op;
pub mod plan;
pub mod reconcile;
pub mod registration;
pub mod run;
pub mod supervise;
pub mod tls;
pub mod watch;

#[cfg(test)]
mod testutil;
