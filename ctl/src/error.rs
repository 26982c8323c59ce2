//! The one error type of `ovctl` and the exit code each failure maps to.
//!
//! The design decision: a status *returned by the agent* (even `Unavailable`,
//! which the agent uses when etcd is down) is an agent error (exit 1), while
//! failing to talk to the agent at all is exit 3. `client.rs` tells the two
//! apart; this module only names them.

use thiserror::Error;

/// Exit code when the command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code when the agent answered with an error status.
pub const EXIT_AGENT: u8 = 1;
/// Exit code of a usage error (clap uses it for its own errors too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the agent could not be reached (or did not answer in time).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code of `doctor` when it found at least one problem.
pub const EXIT_PROBLEMS: u8 = 4;

/// Everything that can go wrong in `ovctl`.
#[derive(Debug, Error)]
pub enum CtlError {
    /// `-H`/`OVNET_HOST` is not an address we can dial.
    #[error("invalid agent address \"{addr}\": {reason}")]
    InvalidAddress { addr: String, reason: String },

    /// Flags that do not fit together, or a TLS file that cannot be used;
    /// found before contacting the agent.
    #[error("{0}")]
    Usage(String),

    /// A transport-level failure: no connection, connection reset, bad
    /// HTTP/2, a failed TLS handshake.
    #[error("cannot reach ovagent at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },

    /// The whole command (connect and call) took longer than `--timeout`.
    #[error("no answer from ovagent at {addr} within {secs}s")]
    Timeout { addr: String, secs: u64 },

    /// The agent answered with a gRPC error status; we show its message only.
    #[error("{message}")]
    Agent { code: tonic::Code, message: String },

    /// The agent answered, but with something we cannot show.
    #[error("unexpected answer from ovagent: {0}")]
    BadReply(String),

    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),

    /// Encoding the JSON output failed.
    #[error("cannot encode output as JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// `doctor` ran and found problems (they are in the output).
    #[error("doctor found {} on host {node:?}", count_of(*count, "problem"))]
    Problems { node: String, count: usize },
}

/// `1 problem`, `2 problems`, `0 problems`.
pub fn count_of(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

impl CtlError {
    /// The process exit code for this error (see the table in `main.rs`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::InvalidAddress { .. } | CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable { .. } | CtlError::Timeout { .. } => EXIT_UNREACHABLE,
            CtlError::Agent { .. } | CtlError::BadReply(_) | CtlError::Output(_) | CtlError::Json(_) => {
                EXIT_AGENT
            }
            CtlError::Problems { .. } => EXIT_PROBLEMS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_stable() {
        let agent = CtlError::Agent { code: tonic::Code::Unavailable, message: "etcd is unreachable".into() };
        assert_eq!(agent.exit_code(), 1);
        assert_eq!(agent.to_string(), "etcd is unreachable");
        let unreachable =
            CtlError::Unreachable { addr: "unix:///x".into(), reason: "Connection refused".into() };
        assert_eq!(unreachable.exit_code(), 3);
        let timeout = CtlError::Timeout { addr: "tcp://1.2.3.4:5".into(), secs: 10 };
        assert_eq!(timeout.exit_code(), 3);
        let addr = CtlError::InvalidAddress { addr: "x".into(), reason: "y".into() };
        assert_eq!(addr.exit_code(), 2);
        assert_eq!(CtlError::Usage("--tls-cert needs --tls-key".into()).exit_code(), 2);
        let problems = CtlError::Problems { node: "h1".into(), count: 3 };
        assert_eq!(problems.exit_code(), 4);
        assert_eq!(problems.to_string(), "doctor found 3 problems on host \"h1\"");
        let one = CtlError::Problems { node: "h1".into(), count: 1 };
        assert_eq!(one.to_string(), "doctor found 1 problem on host \"h1\"");
        assert_eq!(count_of(0, "warning"), "0 warnings");
    }
}
