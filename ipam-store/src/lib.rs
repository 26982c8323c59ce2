//! ovnet's cluster state in etcd: key layout, typed records, validation,
//! address allocation and the transactions that claim them.
//!
//! The crate has two layers (after flannel's registry / lease-manager split):
//! pure modules (`keys`, `records`, `validate`, `alloc`, `state`) that decide
//! and can be tested without etcd, and `store`, which reads etcd at one
//! revision, asks the pure layer for a decision and commits it in a single
//! transaction guarded by compares, retrying when it loses a race. No lock or
//! leader exists anywhere: etcd transactions are the only coordination.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod error;
pub mod keys;
pub mod mac;
pub mod ports;
pub mod records;
pub mod state;
pub mod store;
pub mod validate;

pub use error::{Error, ErrorKind};
pub use keys::{Key, Keys};
pub use mac::Mac;
pub use ports::{PortMapping, Proto};
pub use records::*;
pub use state::{BadRecord, ClusterState, EndpointMap};
pub use store::{
    EndpointOffer, EtcdStore, HostStatus, NewEndpoint, NewNetwork, StoreConfig, StoreWatch, WatchBatch,
    WatchEvent,
};
