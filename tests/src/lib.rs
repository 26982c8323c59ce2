//! The ovnet lab: the two-VM seed experiment on one machine.
//!
//! etcd and an underlay bridge live in a namespace of their own; each host is
//! a namespace joined to that bridge by a veth, running a real `ovagent`;
//! containers are namespaces connected with a real `ovctl`. Every lab has
//! its own namespaces, etcd and key prefix, and removes them all on drop, so
//! labs run side by side and leave nothing behind when a test fails.

pub mod bench;
pub mod chaos;
pub mod dns;
pub mod docker;
pub mod docker_demo;
pub mod echo;
pub mod etcd;
pub mod image;
pub mod lab;
pub mod netns;
pub mod pcap;
pub mod pings;
pub mod pki;
pub mod podman;
pub mod report;

pub use etcd::{Etcd, EtcdTls};
pub use lab::{Lab, LabOptions};
pub use netns::Netns;
