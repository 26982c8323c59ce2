//! What `--cni-conf-dir` should hold, and how to get there from what it
//! holds: pure functions, the I/O is in the parent module.
//!
//! One file per ovnet network, `NAME.conflist`, whose `"name"` is the
//! network's, with one plugin of type `ovnet` that names this agent's
//! address. A file is ours when its first plugin is of type `ovnet`: only
//! ours are rewritten or removed, so the directory can be shared with other
//! networks' conflists (podman's own, say).

use std::collections::{BTreeMap, BTreeSet};

use ovnet_ipam_store::ClusterState;
use serde_json::{Value, json};

/// The CNI type of the plugin (its binary's name).
pub const PLUGIN_TYPE: &str = "ovnet";
/// The CNI version of the conflists written.
pub const CNI_VERSION: &str = "1.0.0";
/// The file name suffix libcni loads conflists from.
pub const SUFFIX: &str = ".conflist";

/// The conflist of `network` for the agent at `agent` (its `--listen`).
/// `ovctl network conflist` prints the same text.
pub fn conflist(network: &str, agent: &str) -> String {
    let list = json!({
        "cniVersion": CNI_VERSION,
        "name": network,
        "plugins": [{
            "type": PLUGIN_TYPE,
            "agent": agent,
            "capabilities": { "ips": true, "aliases": true, "portMappings": true },
        }],
    });
    format!("{list:#}\n")
}

/// File name -> content, for every network of `state` that host `node`
/// can use (not another host's bridge network).
pub fn desired(state: &ClusterState, agent: &str, node: &str) -> BTreeMap<String, String> {
    let usable = state.networks.values().filter(|n| n.usable_on(node));
    usable.map(|n| (format!("{}{SUFFIX}", n.name), conflist(&n.name, agent))).collect()
}

/// The conflists found in the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Our files: name -> content.
    pub ours: BTreeMap<String, String>,
    /// Other files with the suffix, which are never touched.
    pub foreign: BTreeSet<String>,
}

impl Observed {
    /// Sorts one file found in the directory.
    pub fn add(&mut self, file: String, content: String) {
        if is_ours(&content) {
            self.ours.insert(file, content);
        } else {
            self.foreign.insert(file);
        }
    }
}

/// True for a conflist whose first plugin is of type `ovnet`.
pub fn is_ours(content: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(content) else {
        return false;
    };
    v.get("plugins").and_then(|p| p.get(0)).and_then(|p| p.get("type")) == Some(&json!(PLUGIN_TYPE))
}

/// A change to the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Write `content` to `file` (a temporary file renamed over it).
    Write { file: String, content: String },
    /// Remove our `file`.
    Remove { file: String },
    /// A file of another owner holds the name a network needs: left alone.
    Blocked { file: String },
}

/// The changes that make `observed` hold `desired`.
pub fn plan(desired: &BTreeMap<String, String>, observed: &Observed) -> Vec<FileOp> {
    let mut ops = Vec::new();
    for (file, content) in desired {
        if observed.foreign.contains(file) {
            ops.push(FileOp::Blocked { file: file.clone() });
        } else if observed.ours.get(file) != Some(content) {
            ops.push(FileOp::Write { file: file.clone(), content: content.clone() });
        }
    }
    for file in observed.ours.keys().filter(|f| !desired.contains_key(*f)) {
        ops.push(FileOp::Remove { file: file.clone() });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::network;

    const AGENT: &str = "unix:///run/ovnet/ovagent.sock";

    #[test]
    fn the_conflist_names_the_network_and_the_agent() {
        let v: Value = serde_json::from_str(&conflist("demo", AGENT)).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0", "name": "demo",
                   "plugins": [{"type": "ovnet", "agent": AGENT, "capabilities": {"ips": true, "aliases": true, "portMappings": true}}]})
        );
        assert!(is_ours(&conflist("demo", AGENT)));
        assert!(!is_ours(r#"{"name":"podman","plugins":[{"type":"bridge"}]}"#));
        assert!(!is_ours("garbage"));
    }

    #[test]
    fn one_file_per_network() {
        let mut s = ClusterState::default();
        s.networks.insert("blue".into(), network("blue", 4096, "10.128.0.0/16"));
        s.networks.insert("red".into(), network("red", 4097, "10.129.0.0/16"));
        let d = desired(&s, AGENT, "h1");
        assert_eq!(d.keys().collect::<Vec<_>>(), ["blue.conflist", "red.conflist"]);
        assert_eq!(d["red.conflist"], conflist("red", AGENT));
        // A bridge network has a conflist on its own host only.
        let mut lan = network("lan", 4098, "10.130.0.0/16");
        (lan.driver, lan.host) = (ovnet_ipam_store::Driver::Bridge, Some("h1".into()));
        s.networks.insert("lan".into(), lan);
        assert!(desired(&s, AGENT, "h1").contains_key("lan.conflist"));
        assert!(!desired(&s, AGENT, "h2").contains_key("lan.conflist"));
        assert_eq!(desired(&s, AGENT, "h2").len(), 2);
    }

    #[test]
    fn plans_writes_removals_and_leaves_other_files_alone() {
        let d = BTreeMap::from([
            ("a.conflist".to_string(), conflist("a", AGENT)),
            ("b.conflist".to_string(), conflist("b", AGENT)),
            ("c.conflist".to_string(), conflist("c", AGENT)),
        ]);
        let mut o = Observed::default();
        o.add("a.conflist".into(), conflist("a", AGENT));
        o.add("b.conflist".into(), conflist("b", "unix:///old.sock"));
        o.add("c.conflist".into(), r#"{"name":"c","plugins":[{"type":"bridge"}]}"#.into());
        o.add("gone.conflist".into(), conflist("gone", AGENT));
        o.add("podman.conflist".into(), r#"{"plugins":[{"type":"bridge"}]}"#.into());
        assert_eq!(
            plan(&d, &o),
            [
                FileOp::Write { file: "b.conflist".into(), content: conflist("b", AGENT) },
                FileOp::Blocked { file: "c.conflist".into() },
                FileOp::Remove { file: "gone.conflist".into() },
            ]
        );
        let mut done = Observed::default();
        for (f, c) in &d {
            done.add(f.clone(), c.clone());
        }
        assert!(plan(&d, &done).is_empty(), "level-triggered: nothing to do once equal");
    }
}
