//! The one error type of the store crate, with messages written for operators.
//!
//! Every failure a caller can act on has its own variant carrying the values an
//! operator needs (`VNI 4096 is already used by network "blue"`), and
//! [`Error::kind`] sorts them into a handful of [`ErrorKind`]s so the agent maps
//! them to gRPC status codes in exactly one place. Connection problems and
//! timeouts are all [`Error::EtcdUnavailable`], whose message starts with
//! "etcd is unreachable".

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Everything that can go wrong in validation, allocation or talking to etcd.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error(
        "invalid network name {name:?}: {rule} (1 to 64 characters: letters, digits, '_', '.', '-', starting with a letter or digit)"
    )]
    InvalidName { name: String, rule: &'static str },

    #[error(
        "invalid host name {name:?}: {rule} (1 to 253 characters: letters, digits, '_', '.', '-', starting with a letter or digit)"
    )]
    InvalidHostName { name: String, rule: String },

    #[error("invalid VNI {vni}: a VXLAN network identifier must be between 1 and 16777215")]
    InvalidVni { vni: u32 },

    #[error("invalid MTU {mtu}: it must be between 68 and 9000")]
    InvalidMtu { mtu: u32 },

    #[error("invalid subnet {subnet}: {rule}")]
    InvalidSubnet { subnet: String, rule: String },

    #[error("invalid block prefix /{len} for subnet {subnet}: {rule}")]
    InvalidBlockPrefix { len: u8, subnet: Ipv4Net, rule: String },

    #[error("unsupported driver {driver:?}: supported drivers are {supported}")]
    UnsupportedDriver { driver: String, supported: &'static str },

    #[error("network {0:?} already exists")]
    NetworkExists(String),

    #[error("network {0:?} not found")]
    NetworkNotFound(String),

    #[error("VNI {vni} is already used by network {network:?}")]
    VniTaken { vni: u32, network: String },

    #[error("subnet {subnet} overlaps network {network:?} ({other_subnet})")]
    SubnetOverlap { subnet: Ipv4Net, network: String, other_subnet: Ipv4Net },

    #[error("no free subnet left in the address pool {pool}")]
    PoolExhausted { pool: Ipv4Net },

    #[error("no free VNI left (4096 to 16777215 are all used)")]
    NoFreeVni,

    #[error("no free address left in network {network:?} ({subnet})")]
    AddressExhausted { network: String, subnet: Ipv4Net },

    #[error("address {ip} is already used in network {network:?}")]
    IpTaken { ip: Ipv4Addr, network: String },

    #[error("address {ip} is not in subnet {subnet}")]
    IpNotInSubnet { ip: Ipv4Addr, subnet: Ipv4Net },

    #[error("address {ip} is reserved: it is {why}")]
    IpReserved { ip: Ipv4Addr, why: String },

    #[error("address {ip} lies in block {block}, which belongs to host {host:?}")]
    BlockOwnedByOtherHost { ip: Ipv4Addr, block: Ipv4Net, host: String },

    #[error(
        "network {network:?} is a bridge network of host {owner:?}: only {owner:?} builds it and connects to it (this is host {host:?})"
    )]
    NetworkOfOtherHost { network: String, owner: String, host: String },

    #[error("network {network:?} is still in use by {endpoints} endpoint{}", plural_s(.endpoints))]
    NetworkInUse { network: String, endpoints: usize },

    #[error("no endpoint with address {ip} in network {network:?}")]
    EndpointNotFound { network: String, ip: Ipv4Addr },

    #[error("invalid DNS name {name:?}: {rule}")]
    InvalidDnsName { name: String, rule: &'static str },

    #[error(
        "name {name:?} is taken on network {network:?} by the endpoint at {ip} (aliases may be shared, names may not)"
    )]
    DnsNameTaken { name: String, network: String, ip: Ipv4Addr },

    #[error("namespace {netns:?} is already connected to network {network:?} (address {ip})")]
    NetnsConnected { netns: String, network: String, ip: Ipv4Addr },

    #[error("host {0:?} is alive; stop its agent and wait for its lease to run out before removing it")]
    HostAlive(String),

    #[error("host {0:?} is not known to the cluster")]
    HostNotFound(String),

    #[error("bad record at {key}: {reason}")]
    BadRecord { key: String, reason: String },

    #[error("gave up on {what} after too many concurrent changes; try again")]
    Contention { what: String },

    #[error("etcd is unreachable: {0}")]
    EtcdUnavailable(String),

    /// etcd answered but refused our credentials (or wants some): retrying
    /// with the same settings cannot help.
    #[error("etcd at {endpoints} refused access: {reason}")]
    EtcdAuth { endpoints: String, reason: String },

    /// etcd's certificate did not verify: retrying with the same CA cannot help.
    #[error("etcd at {endpoints} failed TLS verification: {reason}")]
    EtcdTls { endpoints: String, reason: String },

    #[error("watch revision was compacted (oldest available revision is {compact_revision}); list again")]
    Compacted { compact_revision: i64 },

    #[error("etcd watch ended: {reason}")]
    WatchEnded { reason: String },

    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// The coarse class of an [`Error`]; the agent turns it into a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    AlreadyExists,
    NotFound,
    ResourceExhausted,
    FailedPrecondition,
    Unavailable,
    Internal,
}

impl Error {
    /// Which class of failure this is (maps 1:1 to a gRPC status code).
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            InvalidName { .. }
            | InvalidDnsName { .. }
            | InvalidHostName { .. }
            | InvalidVni { .. }
            | InvalidMtu { .. }
            | InvalidSubnet { .. }
            | InvalidBlockPrefix { .. }
            | UnsupportedDriver { .. }
            | IpNotInSubnet { .. }
            | IpReserved { .. } => ErrorKind::InvalidArgument,
            NetworkExists(_)
            | VniTaken { .. }
            | SubnetOverlap { .. }
            | IpTaken { .. }
            | NetnsConnected { .. }
            | DnsNameTaken { .. } => ErrorKind::AlreadyExists,
            NetworkNotFound(_) | EndpointNotFound { .. } | HostNotFound(_) => ErrorKind::NotFound,
            PoolExhausted { .. } | NoFreeVni | AddressExhausted { .. } => ErrorKind::ResourceExhausted,
            BlockOwnedByOtherHost { .. }
            | NetworkOfOtherHost { .. }
            | NetworkInUse { .. }
            | HostAlive(_)
            | Compacted { .. }
            | EtcdAuth { .. } => ErrorKind::FailedPrecondition,
            Contention { .. } | EtcdUnavailable(_) | WatchEnded { .. } | EtcdTls { .. } => {
                ErrorKind::Unavailable
            }
            BadRecord { .. } => ErrorKind::Internal,
            Etcd(e) => etcd_kind(e),
        }
    }
}

fn etcd_kind(e: &etcd_client::Error) -> ErrorKind {
    if is_unavailable(e) { ErrorKind::Unavailable } else { ErrorKind::Internal }
}

/// Whether an etcd client error means "could not reach etcd" (transport
/// failure, or the gRPC codes Cancelled, DeadlineExceeded, Unavailable).
pub(crate) fn is_unavailable(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    // gRPC status code numbers; etcd_client does not re-export tonic's `Code`.
    const CANCELLED: i32 = 1;
    const DEADLINE_EXCEEDED: i32 = 4;
    const UNAVAILABLE: i32 = 14;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        // A status carrying a source was made on our side from a transport
        // (hyper/h2/io) failure; statuses sent by etcd never have one.
        E::GRpcStatus(s) => {
            matches!(i32::from(s.code()), CANCELLED | DEADLINE_EXCEEDED | UNAVAILABLE)
                || std::error::Error::source(s).is_some()
        }
        _ => false,
    }
}

/// What went wrong while connecting to `endpoints`, sorted into refused
/// credentials, a certificate that does not verify, and everything else
/// (unreachable, worth retrying); the reason is the innermost cause, not a
/// debug dump.
pub(crate) fn connect_error(endpoints: &str, e: &etcd_client::Error) -> Error {
    const INVALID_ARGUMENT: i32 = 3;
    const PERMISSION_DENIED: i32 = 7;
    const FAILED_PRECONDITION: i32 = 9;
    const UNAUTHENTICATED: i32 = 16;
    let reason = reason(e);
    let endpoints = endpoints.to_string();
    if let etcd_client::Error::GRpcStatus(s) = e {
        let code = i32::from(s.code());
        let refused =
            matches!(code, INVALID_ARGUMENT | PERMISSION_DENIED | FAILED_PRECONDITION | UNAUTHENTICATED);
        // Not "etcdserver: not capable" (FailedPrecondition while a new cluster settles).
        let about_auth =
            ["auth", "user", "permission", "password", "token", "role"].iter().any(|w| reason.contains(w));
        if refused && about_auth && std::error::Error::source(s).is_none() {
            return Error::EtcdAuth { endpoints, reason };
        }
    }
    if reason.contains("invalid peer certificate") {
        return Error::EtcdTls { endpoints, reason };
    }
    Error::EtcdUnavailable(format!("cannot connect to {endpoints}: {reason}"))
}

/// The innermost cause of an etcd client error, in words.
fn reason(e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    let text = match e {
        E::GRpcStatus(s) => match std::error::Error::source(s) {
            Some(inner) => innermost(inner),
            None => s.message().trim_start_matches("etcdserver: ").to_string(),
        },
        E::TransportError(t) => innermost(t),
        E::IoError(io) => io.to_string(),
        other => other.to_string(),
    };
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The plural ending of a count: `1 endpoint`, `2 endpoints`.
fn plural_s(n: &usize) -> &'static str {
    if *n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_values() {
        let e = Error::SubnetOverlap {
            subnet: "10.1.0.0/16".parse().unwrap(),
            network: "blue".into(),
            other_subnet: "10.1.0.0/24".parse().unwrap(),
        };
        assert_eq!(e.to_string(), r#"subnet 10.1.0.0/16 overlaps network "blue" (10.1.0.0/24)"#);
        let e = Error::VniTaken { vni: 4096, network: "blue".into() };
        assert_eq!(e.to_string(), r#"VNI 4096 is already used by network "blue""#);
        let e = Error::AddressExhausted { network: "tiny".into(), subnet: "10.9.0.0/30".parse().unwrap() };
        assert_eq!(e.to_string(), r#"no free address left in network "tiny" (10.9.0.0/30)"#);
        assert!(Error::EtcdUnavailable("x".into()).to_string().starts_with("etcd is unreachable"));
    }

    #[test]
    fn kinds() {
        assert_eq!(Error::NetworkExists("a".into()).kind(), ErrorKind::AlreadyExists);
        assert_eq!(Error::NoFreeVni.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(
            Error::NetworkInUse { network: "a".into(), endpoints: 1 }.kind(),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(Error::EtcdUnavailable("x".into()).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn connect_errors_are_sorted_and_plain() {
        let status =
            |code: tonic::Code, msg: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg));
        let e = connect_error(
            "http://a:1",
            &status(
                tonic::Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
        );
        assert_eq!(
            e.to_string(),
            "etcd at http://a:1 refused access: authentication failed, invalid user ID or password"
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        let e = connect_error(
            "http://a:1",
            &status(tonic::Code::FailedPrecondition, "etcdserver: authentication is not enabled"),
        );
        assert!(matches!(e, Error::EtcdAuth { .. }), "{e}");
        let e =
            connect_error("http://a:1", &status(tonic::Code::FailedPrecondition, "etcdserver: not capable"));
        assert!(matches!(e, Error::EtcdUnavailable(_)), "{e}");
        let e = connect_error("http://a:1", &status(tonic::Code::Unavailable, "etcdserver: leader changed"));
        assert_eq!(e.to_string(), "etcd is unreachable: cannot connect to http://a:1: leader changed");
        let io =
            std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid peer certificate: UnknownIssuer");
        let e = connect_error(
            "https://a:1",
            &etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(io))),
        );
        assert_eq!(
            e.to_string(),
            "etcd at https://a:1 failed TLS verification: invalid peer certificate: UnknownIssuer"
        );
        let io = std::io::Error::from_raw_os_error(111);
        let e = connect_error("http://a:1", &etcd_client::Error::IoError(io));
        assert_eq!(e.to_string(), "etcd is unreachable: cannot connect to http://a:1: Connection refused");
    }
}
