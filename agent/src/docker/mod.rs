//! Docker: the agent's side of dockerd.
//!
//! `engine` talks to dockerd's Engine API; `mirror` (`--docker-sync`) keeps
//! dockerd's `ovnet` networks equal to ovnet's; `janitor` keeps this host's
//! Docker endpoint records equal to the endpoints dockerd has.

pub mod engine;
pub mod janitor;
pub mod mirror;
