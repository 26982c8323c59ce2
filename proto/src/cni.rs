//! The CNI conflist of an ovnet network: the one text both the agent (its
//! `--cni-conf-dir`) and `ovctl network conflist` write, so they cannot
//! drift apart.

/// The CNI type of the plugin (its binary's name).
pub const PLUGIN_TYPE: &str = "ovnet";
/// The CNI version of the conflists written.
pub const CNI_VERSION: &str = "1.0.0";

/// The conflist that lets a runtime use ovnet network `network` through the
/// agent at `agent`: named after the network, one `ovnet` plugin with the
/// capabilities it honours (`ips`: a fixed address, `aliases`: DNS
/// aliases, `portMappings`: published ports).
pub fn conflist(network: &str, agent: &str) -> String {
    let list = serde_json::json!({
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
