//! ovagent, the per-host ovnet daemon, as a library: the binary in `main.rs`
//! only parses flags and waits for a signal.
//!
//! The shape: etcd watches keep a local snapshot of the cluster (`watch`);
//! `desired` turns it into what this host's kernel should hold; `plan`
//! compares that with what `dataplane` observes and returns operations; the
//! `reconcile` loop applies them. Watch events only wake the loop, so a missed
//! event or a hand-deleted entry is repaired on the next pass.

pub mod api;
pub mod backoff;
pub mod config;
pub mod dataplane;
pub mod desired;
pub mod error;
pub mod model;
pub mod netns;
pub mod op;
pub mod plan;
pub mod reconcile;
pub mod registration;
pub mod run;
pub mod watch;
