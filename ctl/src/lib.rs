//! `ovctl` and the `ovnet` CNI plugin as one library: both talk gRPC to the
//! agent of their host through the same client (`client`, `addr`, `tls`),
//! and the binaries (`main.rs`, `bin/ovnet.rs`) only read their input and
//! print what the library returns.
#![forbid(unsafe_code)]

pub mod addr;
pub mod cli;
pub mod client;
pub mod cni;
pub mod commands;
pub mod error;
pub mod output;
pub mod tls;
pub mod usage;
pub mod view;
