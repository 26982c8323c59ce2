//! The gRPC API between `ovctl` and `ovagent` (package `ovnet.v1`).
//!
//! Addresses travel as strings in their usual text form; the agent parses and
//! validates them, so a malformed value is an `InvalidArgument` naming the field.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ovnet.v1");
}

pub use v1::*;

pub mod cni;
