//! Rendering for people (aligned tables, short text) and for scripts (JSON).
//!
//! Every renderer returns a `String`; `main` writes it. Tables come from a
//! tiny column aligner: columns are padded to their widest cell and separated
//! by three spaces, an empty cell prints as `-`, and no line ends in spaces.

use serde::Serialize;

use crate::view::{DoctorView, HostView, NetworkView, VersionView};

/// Network ids are shown in tables this short, as `docker network ls` does.
pub const SHORT_ID_LEN: usize = 12;
/// Spaces between two columns.
const GAP: usize = 3;

/// Rows of cells under a header, printed with aligned columns.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; an empty cell prints as `-`.
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells.into_iter().map(|c| if c.is_empty() { "-".to_string() } else { c }).collect();
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let lines = std::iter::once(&self.header).chain(&self.rows);
        let mut widths = vec![0; self.header.len()];
        for line in lines.clone() {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (cell, w) in line.iter().zip(&widths) {
                text.push_str(cell);
                let pad = w - cell.chars().count() + GAP;
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Pretty JSON with a final newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// `network ls`: NAME ID DRIVER HOST SUBNET GATEWAY VNI MTU (HOST: a
/// bridge network's host, `-` for an overlay network).
pub fn networks_table(networks: &[NetworkView]) -> String {
    let mut t = Table::new(&["NAME", "ID", "DRIVER", "HOST", "SUBNET", "GATEWAY", "VNI", "MTU"]);
    for n in networks {
        t.row(vec![
            n.name.clone(),
            n.id.chars().take(SHORT_ID_LEN).collect(),
            if n.internal { format!("{} (internal)", n.driver) } else { n.driver.clone() },
            n.host.clone().unwrap_or_default(),
            n.subnet.clone(),
            n.gateway.clone(),
            n.vni.to_string(),
            n.mtu.to_string(),
        ]);
    }
    t.render()
}

/// `host ls`: NAME VTEP ALIVE BLOCKS, blocks as `network:cidr,...`.
pub fn hosts_table(hosts: &[HostView]) -> String {
    let mut t = Table::new(&["NAME", "VTEP", "ALIVE", "BLOCKS"]);
    for h in hosts {
        let blocks: Vec<String> = h.blocks.iter().map(|b| format!("{}:{}", b.network, b.cidr)).collect();
        t.row(vec![
            h.name.clone(),
            h.vtep.clone().unwrap_or_default(),
            if h.alive { "yes" } else { "no" }.to_string(),
            blocks.join(","),
        ]);
    }
    t.render()
}

/// `version`: one `Key: value` line each, the agent's lines only if it answered.
pub fn version_text(v: &VersionView) -> String {
    let mut t = format!("Client version: {}\n", v.client.version);
    if let Some(agent) = &v.agent {
        t.push_str(&format!("Agent version:  {}\n", agent.version));
        t.push_str(&format!("Agent node:     {}\n", agent.node_name));
    }
    t
}

/// `doctor`: STATUS AREA FINDING, each fix on its own line under its
/// finding, then a summary line.
pub fn doctor_text(d: &DoctorView) -> String {
    let status_w = "problem".len();
    let area_w = d.findings.iter().map(|f| f.area.chars().count()).chain(["AREA".len()]).max().unwrap_or(4);
    let gap = " ".repeat(GAP);
    let mut out = format!("{:<status_w$}{gap}{:<area_w$}{gap}FINDING\n", "STATUS", "AREA");
    for f in &d.findings {
        out.push_str(&format!("{:<status_w$}{gap}{:<area_w$}{gap}{}\n", f.severity, f.area, f.message));
        if let Some(fix) = &f.fix {
            let indent = " ".repeat(status_w + area_w + 2 * GAP);
            out.push_str(&format!("{indent}fix: {fix}\n"));
        }
    }
    let plural = crate::error::count_of;
    let verdict = match (d.problems, d.warnings) {
        (0, 0) => "no problems".to_string(),
        (p, w) => format!("{}, {}", plural(p, "problem"), plural(w, "warning")),
    };
    out.push_str(&format!("\n{}: {verdict} (etcd revision {})\n", d.node, d.revision));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{AgentVersion, BlockView, ClientVersion};

    fn net(name: &str, id: &str, subnet: &str, gw: &str, vni: u32) -> NetworkView {
        NetworkView {
            id: id.into(),
            name: name.into(),
            driver: "overlay".into(),
            host: None,
            subnet: subnet.into(),
            gateway: gw.into(),
            vni,
            mtu: 1450,
            block_prefix: 24,
            internal: false,
        }
    }

    #[test]
    fn table_aligns_columns_and_dashes_empty_cells() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["wide-cell".into(), "".into(), "x".into()]);
        t.row(vec!["é".into(), "y".into(), "".into()]);
        assert_eq!(
            t.render(),
            "A           LONGER   C\n\
             wide-cell   -        x\n\
             é           y        -\n"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(networks_table(&[]), "NAME   ID   DRIVER   HOST   SUBNET   GATEWAY   VNI   MTU\n");
    }

    #[test]
    fn networks_table_shortens_ids() {
        let nets = [
            net("blue", "0123456789abcdef0123", "10.128.0.0/16", "10.128.0.1", 4096),
            NetworkView {
                driver: "bridge".into(),
                host: Some("h1".into()),
                ..net("red", "42", "10.129.0.0/16", "10.129.0.1", 4097)
            },
        ];
        assert_eq!(
            networks_table(&nets),
            "NAME   ID             DRIVER    HOST   SUBNET          GATEWAY      VNI    MTU\n\
             blue   0123456789ab   overlay   -      10.128.0.0/16   10.128.0.1   4096   1450\n\
             red    42             bridge    h1     10.129.0.0/16   10.129.0.1   4097   1450\n"
        );
    }

    #[test]
    fn hosts_table_joins_blocks_and_dashes_unknowns() {
        let hosts = [
            HostView {
                name: "node-a".into(),
                vtep: Some("192.0.2.1".into()),
                alive: true,
                blocks: vec![
                    BlockView { network: "blue".into(), cidr: "10.128.0.0/24".into() },
                    BlockView { network: "red".into(), cidr: "10.129.3.0/24".into() },
                ],
            },
            HostView { name: "node-b".into(), vtep: None, alive: false, blocks: vec![] },
        ];
        assert_eq!(
            hosts_table(&hosts),
            "NAME     VTEP        ALIVE   BLOCKS\n\
             node-a   192.0.2.1   yes     blue:10.128.0.0/24,red:10.129.3.0/24\n\
             node-b   -           no      -\n"
        );
    }

    #[test]
    fn version_text_with_and_without_agent() {
        let mut v = VersionView { client: ClientVersion { version: "0.1.0".into() }, agent: None };
        assert_eq!(version_text(&v), "Client version: 0.1.0\n");
        v.agent = Some(AgentVersion { version: "0.1.1".into(), node_name: "node-a".into() });
        assert_eq!(
            version_text(&v),
            "Client version: 0.1.0\nAgent version:  0.1.1\nAgent node:     node-a\n"
        );
    }

    #[test]
    fn doctor_text_lists_findings_with_fixes_and_a_verdict() {
        use crate::view::FindingView;
        let finding = |severity, area: &str, message: &str, fix: Option<&str>| FindingView {
            severity,
            area: area.into(),
            message: message.into(),
            fix: fix.map(str::to_string),
        };
        let mut d = DoctorView {
            node: "h1".into(),
            revision: 42,
            problems: 1,
            warnings: 0,
            findings: vec![
                finding(
                    "problem",
                    "fdb",
                    "missing flood entry toward 192.0.2.2 on ovvx9",
                    Some("bridge fdb append ..."),
                ),
                finding("ok", "vxlan-port", "UDP port 4789 is open", None),
            ],
        };
        assert_eq!(
            doctor_text(&d),
            "STATUS    AREA         FINDING\n\
             problem   fdb          missing flood entry toward 192.0.2.2 on ovvx9\n\
             \x20                      fix: bridge fdb append ...\n\
             ok        vxlan-port   UDP port 4789 is open\n\
             \n\
             h1: 1 problem, 0 warnings (etcd revision 42)\n"
        );
        d.findings.remove(0);
        d.problems = 0;
        assert!(doctor_text(&d).ends_with("\nh1: no problems (etcd revision 42)\n"));
    }

    #[test]
    fn json_field_names_are_stable() {
        let text = json(&net("blue", "id1", "10.128.0.0/16", "10.128.0.1", 4096)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want =
            ["id", "name", "driver", "host", "subnet", "gateway", "vni", "mtu", "block_prefix", "internal"];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert!(text.ends_with("}\n"));
    }
}
