//! The `ovnet` CNI plugin: a runtime (podman, containerd) runs it with the
//! CNI environment and a network configuration on stdin, and it asks the
//! agent of its host, over the agent's socket named in that configuration,
//! to connect or disconnect the container.
//!
//! The design decision: everything but the agent call is pure. `env` and
//! `conf` turn the environment and stdin into typed values or a CNI error
//! with the spec's code, `reply` builds results in the version asked for,
//! and `plugin` runs a command against anything that implements
//! [`plugin::AgentApi`], so every path, errors included, is unit tested
//! without an agent. `bin/ovnet.rs` only reads the process's input.

pub mod conf;
pub mod env;
pub mod plugin;
pub mod reply;

/// A CNI error: its code, message and details, printed as the spec's error
/// JSON on stdout with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// The error codes of the CNI spec, and ours (100 and up).
pub mod code {
    /// The configuration's `cniVersion` is not one the plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the configuration the plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// A required `CNI_*` variable is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// An I/O failure (reading stdin, an answer we cannot use).
    pub const IO_FAILURE: u32 = 5;
    /// stdin is not a JSON object.
    pub const DECODE: u32 = 6;
    /// The network configuration is invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient: the agent cannot be reached or cannot reach etcd.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The network does not exist in ovnet.
    pub const UNKNOWN_NETWORK: u32 = 100;
    /// The agent refused the request (its message says why).
    pub const AGENT_REFUSED: u32 = 101;
    /// CHECK found the endpoint missing or different.
    pub const CHECK_FAILED: u32 = 102;
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (code {})", self.msg, self.details, self.code)
        }
    }
}
