//! Usage errors as ovctl prints them: one `ovctl: ...` line naming the flag
//! and the value in double quotes, then the usage line.

use clap::Parser;

use super::*;
use crate::cli::Cli;

/// What ovctl prints on stderr for `args`.
fn printed(args: &[&str]) -> String {
    match Cli::try_parse_from(std::iter::once("ovctl").chain(args.iter().copied())) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => message(&e),
    }
}

fn first(args: &[&str]) -> String {
    printed(args).lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_cidr_without_a_length_says_the_length_is_missing() {
    assert_eq!(
        printed(&["network", "create", "--subnet", "10.200.0.0", "x"]),
        "ovctl: invalid --subnet \"10.200.0.0\": the prefix length is missing (a CIDR such as 10.200.0.0/16)\n"
    );
    for (value, why) in [
        ("10.0.0.0/33", "the prefix length \"33\" is not a number from 0 to 32"),
        ("10.0.0.0/", "the prefix length \"\" is not a number from 0 to 32"),
        ("10.0.0/16", "\"10.0.0\" is not an IPv4 address (a CIDR such as 10.128.0.0/16)"),
        ("banana", "not an IPv4 CIDR such as 10.128.0.0/16"),
    ] {
        let want = format!("ovctl: invalid --subnet {value:?}: {why}");
        assert_eq!(first(&["network", "create", "--subnet", value, "x"]), want);
    }
    assert_eq!(parse_subnet("10.200.0.0/16"), Ok("10.200.0.0/16".parse().unwrap()));
}

#[test]
fn ip_errors_name_the_flag_and_the_value() {
    assert_eq!(
        first(&["network", "connect", "--ip", "10.128.0.300", "blue", "ns1"]),
        "ovctl: invalid --ip \"10.128.0.300\": not an IPv4 address such as 10.128.0.5"
    );
    assert_eq!(
        first(&["network", "connect", "--ip", "10.128.0.5/16", "blue", "ns1"]),
        "ovctl: invalid --ip \"10.128.0.5/16\": an address without a prefix length is expected, such as 10.128.0.5"
    );
}

#[test]
fn every_usage_error_is_one_ovctl_line_with_double_quotes() {
    for (args, want) in [
        (
            &["-H", "h1", "version"][..],
            "ovctl: invalid --host \"h1\": expected unix:///path/to/socket, tcp://IP:PORT, http://IP:PORT or https://IP:PORT",
        ),
        (
            &["network", "create", "-d", "macvlan", "x"],
            "ovctl: invalid --driver \"macvlan\": unsupported network driver; supported drivers: overlay, bridge",
        ),
        (
            &["--format", "yaml", "version"],
            "ovctl: invalid --format \"yaml\": expected \"table\" or \"json\"",
        ),
        (&["network", "create", "--vni", "0", "x"], "ovctl: invalid --vni \"0\": must be from 1 to 16777215"),
        (
            &["network", "create", "--block-prefix", "33", "x"],
            "ovctl: invalid --block-prefix \"33\": must be from 1 to 32",
        ),
        (&["--timeout", "0", "version"], "ovctl: invalid --timeout \"0\": must be at least 1"),
        (
            &["completion", "tcsh"],
            "ovctl: invalid shell \"tcsh\": expected \"bash\", \"elvish\", \"fish\", \"powershell\" or \"zsh\"",
        ),
        (&["network", "create", "--subnet"], "ovctl: --subnet needs a value"),
        (
            &["network", "ls", "--frobnicate"],
            "ovctl: unknown flag \"--frobnicate\"; did you mean \"--format\"?",
        ),
        (&["netwrk", "ls"], "ovctl: unknown command \"netwrk\"; did you mean \"network\"?"),
        (&["network", "connect", "blue"], "ovctl: missing <NETNS>"),
    ] {
        let text = printed(args);
        assert_eq!(text.lines().next(), Some(want), "{args:?}: {text}");
        assert!(!text.contains('\''), "{args:?}: single quotes in {text}");
        assert!(!text.contains("error:"), "{args:?}: clap's own style in {text}");
    }
    // Where clap knows the usage, it follows on a second line.
    assert_eq!(
        printed(&["network", "connect", "blue"]),
        "ovctl: missing <NETNS>\nusage: ovctl network connect <NETWORK> <NETNS> (see ovctl network connect --help)\n"
    );
}
