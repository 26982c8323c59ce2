//! Parsing tests for every subcommand, good and bad.

use clap::CommandFactory;
use clap::error::ErrorKind;

use super::*;
use crate::addr::Transport;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ovctl").chain(args.iter().copied()))
}

fn parse_ok(args: &[&str]) -> Cli {
    parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_err(args: &[&str]) -> clap::Error {
    match parse(args) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => e,
    }
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_defaults() {
    let cli = parse_ok(&["network", "ls"]);
    assert_eq!(cli.format, Format::Table);
    assert_eq!(cli.timeout, 10);
    if std::env::var_os("OVNET_HOST").is_none() {
        assert_eq!(cli.host.to_string(), DEFAULT_HOST);
    }
    assert!(matches!(cli.command, Command::Network(NetworkCommand::Ls)));
}

#[test]
fn global_flags_before_and_after_the_subcommand() {
    let before = parse_ok(&["-H", "tcp://1.2.3.4:5", "--format", "json", "host", "ls"]);
    let after = parse_ok(&["host", "ls", "--format", "json", "--host", "tcp://1.2.3.4:5"]);
    for cli in [before, after] {
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.host.transport(), &Transport::Tcp("1.2.3.4:5".into()));
        assert!(matches!(cli.command, Command::Host(HostCommand::Ls)));
    }
    let cli = parse_ok(&["network", "ls", "--timeout", "3"]);
    assert_eq!(cli.timeout, 3);
}

#[test]
fn bad_global_flags() {
    let e = parse_err(&["-H", "garbage", "version"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    assert!(e.to_string().contains("invalid agent address \"garbage\""), "{e}");
    let e = parse_err(&["--format", "yaml", "version"]);
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
    let e = parse_err(&["--timeout", "0", "version"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
}

#[test]
fn network_create_full() {
    let cli = parse_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.128.0.0/16",
        "--vni",
        "4096",
        "--block-prefix",
        "24",
        "--mtu",
        "1450",
        "blue",
    ]);
    let Command::Network(NetworkCommand::Create(c)) = cli.command else {
        panic!("{:?}", cli.command);
    };
    assert_eq!(c.name, "blue");
    assert_eq!(c.driver, "overlay");
    assert_eq!(c.subnet, Some("10.128.0.0/16".parse().unwrap()));
    assert_eq!(c.vni, Some(4096));
    assert_eq!(c.block_prefix, Some(24));
    assert_eq!(c.mtu, Some(1450));
}

#[test]
fn network_create_defaults() {
    let cli = parse_ok(&["network", "create", "red"]);
    let Command::Network(NetworkCommand::Create(c)) = cli.command else {
        panic!("{:?}", cli.command);
    };
    assert_eq!(c.driver, "overlay");
    assert_eq!((c.subnet, c.vni, c.block_prefix, c.mtu), (None, None, None, None));
}

#[test]
fn network_create_refuses_bad_values() {
    let e = parse_err(&["network", "create", "--subnet", "10.0.0.0/33", "x"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
    let e = parse_err(&["network", "create", "--subnet", "banana", "x"]);
    assert!(e.to_string().contains("banana"), "{e}");

    let e = parse_err(&["network", "create", "--driver", "macvlan", "x"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    assert!(e.to_string().contains("unsupported network driver; supported drivers: overlay, bridge"), "{e}");

    for vni in ["0", "16777216", "-1", "x"] {
        parse_err(&["network", "create", "--vni", vni, "x"]);
    }
    for len in ["0", "33", "300"] {
        parse_err(&["network", "create", "--block-prefix", len, "x"]);
    }
    parse_err(&["network", "create", "--mtu", "-5", "x"]);

    let e = parse_err(&["network", "create"]);
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
}

#[test]
fn network_ls_inspect_rm() {
    assert!(matches!(parse_ok(&["network", "list"]).command, Command::Network(NetworkCommand::Ls)));
    let cli = parse_ok(&["network", "inspect", "blue"]);
    assert!(matches!(cli.command, Command::Network(NetworkCommand::Inspect { name }) if name == "blue"));
    let cli = parse_ok(&["network", "rm", "blue"]);
    assert!(matches!(cli.command, Command::Network(NetworkCommand::Rm { name }) if name == "blue"));
    for sub in ["inspect", "rm"] {
        let e = parse_err(&["network", sub]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }
    let e = parse_err(&["network", "ls", "extra"]);
    assert_eq!(e.kind(), ErrorKind::UnknownArgument);
}

#[test]
fn network_connect_and_disconnect() {
    let cli = parse_ok(&["network", "connect", "--ip", "10.128.0.9", "blue", "ns1"]);
    let Command::Network(NetworkCommand::Connect(c)) = cli.command else {
        panic!("{:?}", cli.command);
    };
    assert_eq!((c.network.as_str(), c.netns.as_str()), ("blue", "ns1"));
    assert_eq!(c.ip, Some(Ipv4Addr::new(10, 128, 0, 9)));

    let cli = parse_ok(&["network", "connect", "blue", "/proc/42/ns/net"]);
    let Command::Network(NetworkCommand::Connect(c)) = cli.command else {
        panic!("{:?}", cli.command);
    };
    assert_eq!((c.ip, c.netns.as_str()), (None, "/proc/42/ns/net"));

    let e = parse_err(&["network", "connect", "--ip", "10.128.0.300", "blue", "ns1"]);
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    let e = parse_err(&["network", "connect", "blue"]);
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);

    let cli =
        parse_ok(&["network", "connect", "-p", "8080:80", "--publish", "10.0.0.1:0:53/udp", "blue", "ns1"]);
    let Command::Network(NetworkCommand::Connect(c)) = cli.command else {
        panic!("{:?}", cli.command);
    };
    let shown: Vec<String> = c.publish.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["8080:80/tcp", "10.0.0.1:0:53/udp"]);
    for bad in ["8080:0", "8080:65536", "garbage", "80:80/sctp"] {
        let e = parse_err(&["network", "connect", "--publish", bad, "blue", "ns1"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
        assert!(e.to_string().contains("bad port spec"), "{e}");
    }

    let cli = parse_ok(&["network", "disconnect", "blue", "ns1"]);
    assert!(matches!(
        cli.command,
        Command::Network(NetworkCommand::Disconnect { network, netns }) if network == "blue" && netns == "ns1"
    ));
    let e = parse_err(&["network", "disconnect", "blue"]);
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
}

#[test]
fn host_version_completion() {
    assert!(matches!(parse_ok(&["host", "ls"]).command, Command::Host(HostCommand::Ls)));
    assert!(matches!(parse_ok(&["version"]).command, Command::Version));
    for (name, shell) in [("bash", Shell::Bash), ("zsh", Shell::Zsh), ("fish", Shell::Fish)] {
        let cli = parse_ok(&["completion", name]);
        assert!(matches!(cli.command, Command::Completion { shell: s } if s == shell));
    }
    let e = parse_err(&["completion", "tcsh"]);
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
    let e = parse_err(&["completion"]);
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    let e = parse_err(&[]);
    assert_eq!(e.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    let e = parse_err(&["network"]);
    assert_eq!(e.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    let e = parse_err(&["frobnicate"]);
    assert_eq!(e.kind(), ErrorKind::InvalidSubcommand);
}

#[test]
fn tls_flags_must_fit_the_address() {
    let tls = |args: &[&str]| parse_ok(&[args, &["version"][..]].concat()).tls();
    if ["OVNET_CTL_TLS_CA", "OVNET_CTL_TLS_CERT", "OVNET_CTL_TLS_KEY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return; // the environment would change every answer below
    }
    assert_eq!(tls(&["-H", "tcp://1.2.3.4:5"]).unwrap(), None);
    let ca_only = TlsFiles { ca: "/ca".into(), identity: None };
    assert_eq!(tls(&["-H", "tcp://1.2.3.4:5", "--tls-ca", "/ca"]).unwrap(), Some(ca_only.clone()));
    assert_eq!(tls(&["-H", "https://1.2.3.4:5", "--tls-ca", "/ca"]).unwrap(), Some(ca_only));
    let full = tls(&["-H", "tcp://1.2.3.4:5", "--tls-ca", "/ca", "--tls-cert", "/c", "--tls-key", "/k"]);
    assert_eq!(full.unwrap().unwrap().identity, Some(("/c".into(), "/k".into())));
    for (args, want) in [
        (&["-H", "unix:///x.sock", "--tls-ca", "/ca"][..], "not to the unix socket unix:///x.sock"),
        (&["-H", "http://1.2.3.4:5", "--tls-ca", "/ca"], "is plain text"),
        (&["-H", "https://1.2.3.4:5"], "https://1.2.3.4:5 needs --tls-ca"),
        (&["-H", "tcp://1.2.3.4:5", "--tls-cert", "/c", "--tls-key", "/k"], "--tls-cert needs --tls-ca"),
        (&["-H", "tcp://1.2.3.4:5", "--tls-ca", "/ca", "--tls-key", "/k"], "--tls-key needs --tls-cert"),
    ] {
        let e = tls(args).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{args:?}");
        assert!(e.to_string().contains(want), "{args:?}: {e}");
    }
}
