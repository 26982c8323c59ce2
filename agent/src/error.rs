//! The agent's error type, and its one mapping to gRPC status codes.

use ovnet_ipam_store::ErrorKind;
use tonic::{Code, Status};

use crate::dataplane::DataplaneError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] ovnet_ipam_store::Error),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
}

impl AgentError {
    fn code(&self) -> Code {
        match self {
            AgentError::Store(e) => match e.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::AlreadyExists => Code::AlreadyExists,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::ResourceExhausted => Code::ResourceExhausted,
                ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::Internal => Code::Internal,
            },
            AgentError::Dataplane(e) => dataplane_code(e),
            AgentError::InvalidArgument(_) => Code::InvalidArgument,
            AgentError::NotFound(_) => Code::NotFound,
            AgentError::AlreadyExists(_) => Code::AlreadyExists,
            AgentError::FailedPrecondition(_) => Code::FailedPrecondition,
            AgentError::Unavailable(_) => Code::Unavailable,
        }
    }
}

/// Retryable failures are `Unavailable` (a device not there yet, a busy
/// kernel, an outcome unknown, the firewall not writable now), refusals a
/// caller must fix first `FailedPrecondition` or `InvalidArgument`, and
/// anything else `Internal` (a bug: the agent asked the kernel something wrong).
fn dataplane_code(e: &DataplaneError) -> Code {
    use nix::errno::Errno;
    match e {
        DataplaneError::Netns { .. } => Code::InvalidArgument,
        DataplaneError::MissingDevice { .. } | DataplaneError::OutcomeUnknown { .. } => Code::Unavailable,
        DataplaneError::Firewall(_) => Code::Unavailable,
        DataplaneError::NotOurs { .. } => Code::FailedPrecondition,
        DataplaneError::Op { .. } | DataplaneError::Netlink { .. } => match e.errno() {
            Some(
                Errno::ENODEV
                | Errno::ENOENT
                | Errno::EBUSY
                | Errno::EAGAIN
                | Errno::ENOBUFS
                | Errno::EINTR
                | Errno::ETIMEDOUT,
            ) => Code::Unavailable,
            Some(Errno::EEXIST) => Code::AlreadyExists,
            Some(Errno::EPERM | Errno::EACCES) => Code::FailedPrecondition,
            Some(Errno::ENOSPC | Errno::ENOMEM) => Code::ResourceExhausted,
            _ => Code::Internal,
        },
        DataplaneError::Other(_) => Code::Internal,
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use netlink_packet_core::ErrorMessage;

    use super::*;

    fn refused(errno: i32) -> DataplaneError {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-errno);
        DataplaneError::Op { op: "ip link set ovbr1 up".into(), source: rtnetlink::Error::NetlinkError(msg) }
    }

    #[test]
    fn dataplane_errors_get_codes_a_runtime_can_act_on() {
        let code = |e: DataplaneError| Status::from(AgentError::Dataplane(e)).code();
        let missing =
            DataplaneError::MissingDevice { what: "attaching ovve1".into(), device: "ovbr1".into() };
        assert_eq!(code(missing), Code::Unavailable);
        let lost = DataplaneError::OutcomeUnknown { what: "ip link del ovve1".into(), reason: "EOF".into() };
        assert_eq!(code(lost), Code::Unavailable);
        assert_eq!(code(refused(libc_errno::ENODEV)), Code::Unavailable);
        assert_eq!(code(refused(libc_errno::EBUSY)), Code::Unavailable);
        assert_eq!(code(refused(libc_errno::EPERM)), Code::FailedPrecondition);
        assert_eq!(code(refused(libc_errno::EINVAL)), Code::Internal);
        let not_ours = DataplaneError::NotOurs { name: "eth0".into(), why: "not a veth".into() };
        assert_eq!(code(not_ours), Code::FailedPrecondition);
        assert_eq!(code(DataplaneError::Other("a bug".into())), Code::Internal);
        assert_eq!(refused(libc_errno::EBUSY).errno(), Some(nix::errno::Errno::EBUSY));
    }

    /// Errno numbers (Linux).
    mod libc_errno {
        pub const EPERM: i32 = 1;
        pub const EBUSY: i32 = 16;
        pub const ENODEV: i32 = 19;
        pub const EINVAL: i32 = 22;
    }
}
