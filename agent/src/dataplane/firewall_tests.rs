//! The table's JSON both ways, without root: what `batch` writes and what
//! `parse` makes of `nft -j list table inet ovnet` output.

use super::*;

fn fw(bridges: &[&str]) -> Firewall {
    Firewall { isolated: bridges.iter().map(|b| b.to_string()).collect() }
}

/// `nft -j list table inet ovnet` (nftables 1.0.6) after `ovbr4096` and
/// `ovbr4097` were isolated and some packets dropped; `{extra}` is spliced
/// in as further objects.
fn listing(extra: &str) -> String {
    let rule = |handle: u32, bridge: &str, packets: u32| {
        format!(
            r#"{{"rule": {{"family": "inet", "table": "ovnet", "chain": "forward", "handle": {handle}, "expr": [
              {{"match": {{"op": "==", "left": {{"meta": {{"key": "iifname"}}}}, "right": "{bridge}"}}}},
              {{"match": {{"op": "==", "left": {{"meta": {{"key": "oifname"}}}}, "right": "ovbr*"}}}},
              {{"match": {{"op": "!=", "left": {{"meta": {{"key": "oifname"}}}}, "right": "{bridge}"}}}},
              {{"counter": {{"packets": {packets}, "bytes": {}}}}},
              {{"drop": null}}]}}}}"#,
            packets * 84
        )
    };
    format!(
        r#"{{"nftables": [
          {{"metainfo": {{"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}}},
          {{"table": {{"family": "inet", "name": "ovnet", "handle": 2}}}},
          {{"chain": {{"family": "inet", "table": "ovnet", "name": "forward", "handle": 1, "type": "filter",
                      "hook": "forward", "prio": 0, "policy": "accept"}}}},
          {}, {}{extra}]}}"#,
        rule(3, "ovbr4097", 0),
        rule(2, "ovbr4096", 7)
    )
}

#[test]
fn a_listing_of_what_the_agent_writes_is_its_bridges() {
    assert_eq!(parse_listing(&listing("")), FirewallState::Rules(fw(&["ovbr4096", "ovbr4097"])));
}

#[test]
fn anything_else_in_the_table_is_altered() {
    let foreign_rule = r#", {"rule": {"family": "inet", "table": "ovnet", "chain": "forward", "handle": 9,
        "expr": [{"accept": null}]}}"#;
    let chain = r#", {"chain": {"family": "inet", "table": "ovnet", "name": "mine", "handle": 7}}"#;
    let twice = r#", {"rule": {"family": "inet", "table": "ovnet", "chain": "forward", "handle": 8, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "ovbr4096"}},
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ovbr*"}},
        {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "ovbr4096"}},
        {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}"#;
    for (extra, what) in [
        (foreign_rule, "a rule of its own in chain forward"),
        (chain, "chain mine"),
        (twice, "a second rule for ovbr4096"),
    ] {
        match parse_listing(&listing(extra)) {
            FirewallState::Altered(why) => assert!(why.contains(what), "{why}"),
            other => panic!("{extra}: {other:?}"),
        }
    }
    let accepting = listing("").replace(r#""policy": "accept""#, r#""policy": "drop""#);
    assert!(
        matches!(parse_listing(&accepting), FirewallState::Altered(why) if why.contains("chain forward"))
    );
    assert!(matches!(parse_listing("{not json"), FirewallState::Altered(_)));
}

#[test]
fn a_listing_without_the_table_is_missing() {
    let empty = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]}"#;
    assert_eq!(parse_listing(empty), FirewallState::Missing);
}

#[test]
fn the_batch_replaces_the_table_in_one_go() {
    let json = serde_json::to_value(batch(&fw(&["ovbr4096"]))).unwrap();
    let cmds: Vec<String> = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let (cmd, obj) = o.as_object().unwrap().iter().next().unwrap();
            format!("{cmd} {}", obj.as_object().unwrap().keys().next().unwrap())
        })
        .collect();
    assert_eq!(cmds, ["add table", "delete table", "add table", "add chain", "add rule"]);
    let rule = &json["nftables"][4]["add"]["rule"];
    assert_eq!(rule["expr"][0]["match"]["right"], "ovbr4096");
    assert_eq!(rule["expr"][1]["match"]["right"], "ovbr*");
    assert_eq!(rule["expr"][2]["match"]["op"], "!=");
}

#[test]
fn what_the_batch_adds_reads_back_as_written() {
    let want = fw(&["ovbr4096", "ovbr5000"]);
    // The listing form of the batch: its `add`ed objects without the commands.
    let objects: Vec<NfObject> = batch(&want)
        .objects
        .iter()
        .skip(2)
        .filter_map(|o| match o {
            NfObject::CmdObject(nftables::schema::NfCmd::Add(obj)) => Some(NfObject::ListObject(obj.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(parse(&Nftables { objects: objects.into() }), FirewallState::Rules(want));
}
