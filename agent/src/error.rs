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
            AgentError::Dataplane(DataplaneError::Netns { .. }) => Code::InvalidArgument,
            AgentError::Dataplane(_) => Code::Internal,
            AgentError::InvalidArgument(_) => Code::InvalidArgument,
            AgentError::NotFound(_) => Code::NotFound,
            AgentError::AlreadyExists(_) => Code::AlreadyExists,
            AgentError::FailedPrecondition(_) => Code::FailedPrecondition,
            AgentError::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
