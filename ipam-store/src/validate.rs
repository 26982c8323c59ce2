//! Pure checks of user input, run before anything touches etcd.
//!
//! Each check returns an error that names the rejected value and the rule it
//! broke, so `ovctl` can print it as is. The design decision: names are
//! restricted to `[A-Za-z0-9][A-Za-z0-9_.-]*`, which keeps them safe as etcd
//! key segments (no `/`) and as parts of Linux interface names.

use ipnet::Ipv4Net;

use crate::error::Error;
use crate::records::Driver;

/// The drivers this version implements.
pub const SUPPORTED_DRIVERS: &str = "\"overlay\", \"bridge\"";

fn name_chars_ok(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err("it must start with a letter or digit");
        }
        Some(_) => {}
    }
    if chars.any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err("it contains a character other than letters, digits, '_', '.', '-'");
    }
    Ok(())
}

/// A network name: 1..=64 characters of `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub fn network_name(name: &str) -> Result<(), Error> {
    let invalid = |rule| Error::InvalidName { name: name.to_string(), rule };
    if name.len() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    name_chars_ok(name).map_err(invalid)
}

/// A host name: 1..=253 characters of `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub fn host_name(name: &str) -> Result<(), Error> {
    let invalid = |rule: &str| Error::InvalidHostName { name: name.to_string(), rule: rule.to_string() };
    if name.len() > 253 {
        return Err(invalid("it is longer than 253 characters"));
    }
    name_chars_ok(name).map_err(invalid)
}

/// A DNS label for an endpoint's name or alias: 1..=63 of `[a-z0-9-]`,
/// not starting or ending with `-` (RFC 1123; lower case, as stored).
pub fn dns_label(name: &str) -> Result<(), Error> {
    let invalid = |rule| Err(Error::InvalidDnsName { name: name.to_string(), rule });
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 63 {
        return invalid("it is longer than 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return invalid("only lower-case letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return invalid("it must not start or end with '-'");
    }
    Ok(())
}

/// The prefix of the host end of every veth ovnet makes (`ovve` + id).
pub const VETH_PREFIX: &str = "ovve";

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A Linux interface name: 1..=15 bytes, not `.` or `..`, without `/`,
/// `:`, whitespace or control characters (what `dev_valid_name` accepts,
/// minus the `:` of aliases).
pub fn interface_name(name: &str) -> Result<(), String> {
    let invalid = |rule: &str| Err(format!("interface name {name:?}: {rule}"));
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > IFNAME_MAX {
        return invalid("it is longer than 15 characters");
    }
    if name == "." || name == ".." {
        return invalid("it is not an interface name");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii()) {
        return invalid("it contains a character other than printable ASCII without '/', ':' or spaces");
    }
    Ok(())
}

/// The host end of one of ovnet's veths: `ovve` and 1..=11 letters or
/// digits. Anything else (`eth0`, another network's `ovvx…`) is not ours to
/// change or delete.
pub fn host_veth_name(name: &str) -> Result<(), String> {
    if name.len() > IFNAME_MAX {
        return Err(format!("veth name {name:?}: it is longer than 15 characters"));
    }
    match name.strip_prefix(VETH_PREFIX) {
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => Ok(()),
        _ => Err(format!(
            "veth name {name:?} is not one of ovnet's veths ({VETH_PREFIX} followed by letters or digits)"
        )),
    }
}

/// A VXLAN network identifier: 1..=16_777_215 (24 bits, 0 excluded).
pub fn vni(vni: u32) -> Result<(), Error> {
    if (1..=16_777_215).contains(&vni) { Ok(()) } else { Err(Error::InvalidVni { vni }) }
}

/// An MTU for the overlay interfaces: 68..=9000.
pub fn mtu(mtu: u32) -> Result<(), Error> {
    if (68..=9000).contains(&mtu) { Ok(()) } else { Err(Error::InvalidMtu { mtu }) }
}

/// A network subnet: prefix length 8..=30, written as its own network address.
pub fn subnet(subnet: &Ipv4Net) -> Result<(), Error> {
    let invalid = |rule: String| Error::InvalidSubnet { subnet: subnet.to_string(), rule };
    let len = subnet.prefix_len();
    if !(8..=30).contains(&len) {
        return Err(invalid(format!("the prefix length must be between /8 and /30, not /{len}")));
    }
    if subnet.addr() != subnet.network() {
        return Err(invalid(format!("it has host bits set; did you mean {}?", subnet.trunc())));
    }
    Ok(())
}

/// The size of the blocks hosts lease: at least as long as the subnet's
/// prefix (a block fits inside it) and at most /30 (a block has a usable address).
pub fn block_prefix(subnet: &Ipv4Net, len: u8) -> Result<(), Error> {
    let invalid = |rule: String| Error::InvalidBlockPrefix { len, subnet: *subnet, rule };
    if len < subnet.prefix_len() {
        return Err(invalid(format!(
            "a block must fit in the subnet, so its prefix must be /{} or longer",
            subnet.prefix_len()
        )));
    }
    if len > 30 {
        return Err(invalid("the prefix must be /30 or shorter".to_string()));
    }
    Ok(())
}

/// The network driver: "overlay" or "bridge".
pub fn driver(driver: &str) -> Result<Driver, Error> {
    Driver::ALL
        .into_iter()
        .find(|d| d.as_str() == driver)
        .ok_or_else(|| Error::UnsupportedDriver { driver: driver.to_string(), supported: SUPPORTED_DRIVERS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["web", "a", "web-1", "0db", &"x".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web", "we_b", "-web", "web-", "a.b", &"x".repeat(64)] {
            assert!(matches!(dns_label(bad), Err(Error::InvalidDnsName { .. })), "{bad}");
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn network_names() {
        for ok in ["a", "blue", "Net-1.x_y", "0", &"a".repeat(64)] {
            assert!(network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "é", &"a".repeat(65)] {
            let err = network_name(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(host_name("node-1.example").is_ok());
        assert!(host_name("a/b").is_err());
    }

    #[test]
    fn numbers() {
        assert!(vni(1).is_ok() && vni(16_777_215).is_ok());
        assert!(vni(0).is_err() && vni(16_777_216).is_err());
        assert!(mtu(68).is_ok() && mtu(9000).is_ok() && mtu(1450).is_ok());
        assert!(mtu(67).is_err() && mtu(9001).is_err());
        assert!(vni(0).unwrap_err().to_string().contains("VNI 0"));
    }

    #[test]
    fn subnets() {
        assert!(subnet(&net("10.1.0.0/16")).is_ok());
        assert!(subnet(&net("10.9.0.0/30")).is_ok());
        let e = subnet(&net("10.1.2.3/16")).unwrap_err().to_string();
        assert!(e.contains("10.1.2.3/16") && e.contains("10.1.0.0/16"), "{e}");
        assert!(subnet(&net("10.0.0.0/7")).is_err());
        assert!(subnet(&net("10.0.0.0/31")).is_err());
    }

    #[test]
    fn block_prefixes() {
        let s = net("10.1.0.0/16");
        assert!(block_prefix(&s, 16).is_ok() && block_prefix(&s, 30).is_ok());
        assert!(block_prefix(&s, 15).is_err() && block_prefix(&s, 31).is_err());
        let e = block_prefix(&s, 15).unwrap_err().to_string();
        assert!(e.contains("/15") && e.contains("10.1.0.0/16"), "{e}");
    }

    #[test]
    fn drivers() {
        assert_eq!(driver("overlay").unwrap(), Driver::Overlay);
        assert_eq!(driver("bridge").unwrap(), Driver::Bridge);
        for bad in ["macvlan", "", "Bridge", "overlay "] {
            let e = driver(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("\"overlay\", \"bridge\""), "{e}");
        }
    }
}
