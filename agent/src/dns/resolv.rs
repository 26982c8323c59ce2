//! The resolv.conf that `ovctl network connect` of an `ip netns` name
//! writes: `/etc/netns/NAME/resolv.conf`, which `ip netns exec NAME` mounts
//! over /etc/resolv.conf.
//!
//! The design decision: the file is ovnet's only while it carries
//! `MARK`; a file someone else wrote is never touched. The first network
//! connected gives the nameserver (its gateway; every gateway answers for
//! the networks of the querier's address), each connected network adds its
//! search domain, and a disconnect takes its domain out again (the file
//! goes with the last one). `timeout:1 attempts:3` lets a lookup ride out
//! an agent restart (the server is gone for well under a second).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// First line of every resolv.conf ovnet writes.
pub const MARK: &str = "# written by ovnet (ovctl network connect); ovnet removes it on disconnect";
/// The resolver options ovnet writes.
pub const OPTIONS: &str = "options timeout:1 attempts:3";

/// The resolv.conf of an `ip netns` name, or `None` for a path.
pub fn path_for(netns: &str) -> Option<PathBuf> {
    let plain = !netns.is_empty() && !netns.contains('/') && netns != "." && netns != "..";
    plain.then(|| Path::new("/etc/netns").join(netns).join("resolv.conf"))
}

/// The text with `domain` added (a fresh file when `current` is not ours).
pub fn with_network(current: Option<&str>, gateway: Ipv4Addr, domain: &str) -> Option<String> {
    let (mut nameserver, mut search) = (gateway.to_string(), Vec::new());
    match current {
        Some(text) if text.starts_with(MARK) => (nameserver, search) = parse(text, nameserver),
        Some(_) => return None,
        None => {}
    }
    if !search.iter().any(|d| d == domain) {
        search.push(domain.to_string());
    }
    Some(render(&nameserver, &search))
}

/// The text without `domain`; `Some(None)` when the file should go, `None`
/// when it is not ours.
pub fn without_network(current: &str, domain: &str) -> Option<Option<String>> {
    if !current.starts_with(MARK) {
        return None;
    }
    let (nameserver, mut search) = parse(current, String::new());
    search.retain(|d| d != domain);
    Some((!search.is_empty()).then(|| render(&nameserver, &search)))
}

fn parse(text: &str, default_ns: String) -> (String, Vec<String>) {
    let mut nameserver = default_ns;
    let mut search = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => nameserver = words.next().unwrap_or_default().to_string(),
            Some("search") => search = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    (nameserver, search)
}

fn render(nameserver: &str, search: &[String]) -> String {
    format!("{MARK}\nnameserver {nameserver}\nsearch {}\n{OPTIONS}\n", search.join(" "))
}

/// Adds network `domain` (gateway `gateway`) to the resolv.conf of `netns`.
pub fn connected(netns: &str, gateway: Ipv4Addr, domain: &str) -> std::io::Result<()> {
    let Some(path) = path_for(netns) else {
        return Ok(());
    };
    let current = std::fs::read_to_string(&path).ok();
    let Some(text) = with_network(current.as_deref(), gateway, domain) else {
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, text)
}

/// Takes network `domain` out of the resolv.conf of `netns`.
pub fn disconnected(netns: &str, domain: &str) -> std::io::Result<()> {
    let Some(path) = path_for(netns) else {
        return Ok(());
    };
    let Ok(current) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    match without_network(&current, domain) {
        None => Ok(()),
        Some(Some(text)) => std::fs::write(&path, text),
        Some(None) => {
            std::fs::remove_file(&path)?;
            if let Some(dir) = path.parent() {
                // Only when empty: someone else's files stay.
                let _ = std::fs::remove_dir(dir);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_removes_search_domains() {
        let gw: Ipv4Addr = "10.1.0.1".parse().unwrap();
        let one = with_network(None, gw, "blue").unwrap();
        assert!(one.contains("nameserver 10.1.0.1\nsearch blue\noptions timeout:1 attempts:3"), "{one}");
        let two = with_network(Some(&one), "10.2.0.1".parse().unwrap(), "red").unwrap();
        assert!(two.contains("nameserver 10.1.0.1\nsearch blue red\n"), "{two}");
        let back = without_network(&two, "blue").unwrap().unwrap();
        assert!(back.contains("nameserver 10.1.0.1\nsearch red\n"), "{back}");
        assert_eq!(without_network(&back, "red"), Some(None));
        assert_eq!(with_network(Some("nameserver 8.8.8.8\n"), gw, "blue"), None, "not ours");
        assert_eq!(without_network("nameserver 8.8.8.8\n", "blue"), None);
        assert_eq!(path_for("/proc/1/ns/net"), None);
        assert_eq!(path_for("c1"), Some(PathBuf::from("/etc/netns/c1/resolv.conf")));
    }
}
