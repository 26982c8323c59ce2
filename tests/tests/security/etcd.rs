//! Agents against an etcd that wants TLS client certificates, or a user and
//! password: a network across two hosts works, and each wrong setting is
//! refused with a message saying which flag to look at. Passwords never show
//! in a log.

use ovnet_agent::netns::block_on_in_netns;
use ovnet_tests::lab::AgentOptions;
use ovnet_tests::netns::{ping, unique_id};
use ovnet_tests::{Etcd, EtcdTls, Netns};

use super::*;

/// Pings after the network converged, each way: (sent, lost).
fn pings_both_ways(lab: &Lab, (c1, ip1): (&str, &str), (c2, ip2): (&str, &str)) -> (u64, u64) {
    poll("c1 and c2 to reach each other", CONVERGE, || (ping(c1, ip2) && ping(c2, ip1)).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let mut lost = 0;
    for _ in 0..5 {
        lost += u64::from(!ping(c1, ip2)) + u64::from(!ping(c2, ip1));
    }
    (10, lost)
}

/// A network on two hosts with a container on each: the containers' names and addresses.
fn network_across(lab: &mut Lab) -> ((String, String), (String, String)) {
    lab.create_network(0, "-d overlay sec").unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let a = lab.connected(0, "sec", "c1").unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let b = lab.connected(1, "sec", "c2").unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    (a, b)
}

#[test]
fn agents_use_etcd_with_client_certificates() {
    let mut pki = Pki::new().unwrap();
    let ca = pki.ca("etcd-ca").unwrap();
    let other = pki.ca("other").unwrap();
    let client = pki.leaf("etcd-ca", "ovagent", &["ovagent"]).unwrap();
    let spare = pki.leaf("etcd-ca", "spare", &["ovagent"]).unwrap();
    let (ca_s, cert, key) =
        (path(&ca).to_string(), path(&client.cert).to_string(), path(&client.key).to_string());
    let flags = ["--etcd-cacert", &ca_s, "--etcd-cert", &cert, "--etcd-key", &key];
    let agents =
        AgentOptions { extra_args: flags.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let opts = LabOptions { hosts: 2, ..Default::default() };
    let mut lab = Lab::start_with_etcd(opts, agents, |underlay, ip| {
        let server = pki.leaf("etcd-ca", "etcd", &[&ip.to_string()])?;
        let tls = EtcdTls { cert: server.cert, key: server.key, client_ca: Some(ca.clone()) };
        Etcd::start_in_netns_tls(&underlay.name, ip, &tls)
    })
    .unwrap();
    assert!(lab.etcd.endpoint().starts_with("https://"), "{}", lab.etcd.endpoint());
    assert!(lab.etcd_dump().is_err(), "etcd answered a client without a certificate");

    let ((c1, ip1), (c2, ip2)) = network_across(&mut lab);
    let (pings_sent, pings_lost) = pings_both_ways(&lab, (&c1, &ip1), (&c2, &ip2));
    assert_eq!(pings_lost, 0);

    // h2 restarted with a wrong CA: it stops, naming the flag.
    lab.kill_agent(1);
    let other_s = path(&other);
    let wrong_ca = ["--etcd-cacert", other_s, "--etcd-cert", &cert, "--etcd-key", &key];
    let log =
        exits_non_zero(&mut lab, 1, &wrong_ca, &[], "failed TLS verification: invalid peer certificate");
    assert!(log.contains("is --etcd-cacert the CA that signed etcd's certificate"), "{log}");

    // Without a client certificate etcd hangs up; the agent retries, saying why.
    let mark = lab.hosts[1].log().len();
    lab.spawn_agent(1, &["--etcd-cacert", &ca_s], &[]).unwrap();
    poll("h2 to explain the refused connection", CONVERGE, || {
        log_since(&lab, 1, mark)
            .contains("it may want a client certificate (--etcd-cert, --etcd-key)")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", log_since(&lab, 1, mark)));
    lab.kill_agent(1);

    // Files that cannot work stop it before it binds.
    let spare_key = path(&spare.key);
    let mismatch = ["--etcd-cacert", &ca_s, "--etcd-cert", &cert, "--etcd-key", spare_key];
    refuses_to_start(&mut lab, 1, &mismatch, &[], "does not belong to the certificate in --etcd-cert");
    refuses_to_start(&mut lab, 1, &["--etcd-cert", &cert, "--etcd-key", &key], &[], "needs --etcd-cacert");

    // Back with the right files, h2 serves again and the network still works.
    lab.start_agent(1).unwrap();
    let (more_sent, more_lost) = pings_both_ways(&lab, (&c1, &ip1), (&c2, &ip2));
    assert_eq!(more_lost, 0);

    let outcome = Outcome {
        category: "security".into(),
        test: "agents_use_etcd_with_client_certificates".into(),
        scenario: "etcd serves https with --client-cert-auth; agents with --etcd-cacert/--etcd-cert/--etcd-key; \
                   one restarted with a wrong CA, without a client certificate, with a key of another certificate"
            .into(),
        held: "network create, connect and cross-host pings work; each wrong setting is refused with the flag named"
            .into(),
        pings_sent: pings_sent + more_sent,
        pings_lost: pings_lost + more_lost,
        operations: 8,
        panics: lab.panics(),
        ..Default::default()
    };
    assert_eq!(outcome.panics, 0, "{}", lab.logs());
    record(&outcome).unwrap();
}

/// Turns on etcd's authentication: a root user and user `ovnet` with
/// read-write access to every key under `/`, with `password`.
fn enable_auth(underlay: &Netns, endpoint: &str, password: &str) -> anyhow::Result<()> {
    let (endpoint, password) = (endpoint.to_string(), password.to_string());
    let root_password = format!("root-{}", unique_id());
    let ns = PathBuf::from(underlay.path());
    block_on_in_netns(&ns, move || async move {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        c.user_add("root", root_password, None).await?;
        c.user_grant_role("root", "root").await?;
        c.role_add("ovnet").await?;
        c.role_grant_permission("ovnet", etcd_client::Permission::read_write("/").with_prefix()).await?;
        c.user_add("ovnet", password, None).await?;
        c.user_grant_role("ovnet", "ovnet").await?;
        c.auth_enable().await?;
        Ok::<_, etcd_client::Error>(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .map_err(|e| anyhow::anyhow!("enabling etcd authentication: {e}"))
}

#[test]
fn agents_use_etcd_with_a_user_and_password() {
    let secret = format!("pw-{}-{}", unique_id(), std::process::id());
    let wrong = "not-the-password";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd-password");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let flags = ["--etcd-user", "ovnet", "--etcd-password-file", path(&file)];
    let agents =
        AgentOptions { extra_args: flags.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let opts = LabOptions { hosts: 2, ..Default::default() };
    let mut lab = Lab::start_with_etcd(opts, agents, |underlay, ip| {
        let etcd = Etcd::start_in_netns(&underlay.name, ip)?;
        enable_auth(underlay, &etcd.endpoint(), &secret)?;
        Ok(etcd)
    })
    .unwrap();
    assert!(lab.etcd_dump().is_err(), "etcd answered a client without credentials");

    let ((c1, ip1), (c2, ip2)) = network_across(&mut lab);
    let (pings_sent, pings_lost) = pings_both_ways(&lab, (&c1, &ip1), (&c2, &ip2));
    assert_eq!(pings_lost, 0);

    // A wrong password (from the environment), none at all, a user without one.
    lab.kill_agent(1);
    let env = [("OVNET_ETCD_PASSWORD", wrong)];
    let log =
        exits_non_zero(&mut lab, 1, &["--etcd-user", "ovnet"], &env, "refused access: authentication failed");
    assert!(log.contains("check --etcd-user and its password"), "{log}");
    exits_non_zero(&mut lab, 1, &[], &[], "etcd has authentication enabled: pass --etcd-user");
    refuses_to_start(&mut lab, 1, &["--etcd-user", "ovnet"], &[], "--etcd-user ovnet needs a password");
    let twice = ["--etcd-user", "ovnet", "--etcd-password-file", path(&file)];
    refuses_to_start(&mut lab, 1, &twice, &env, "the etcd password is given twice");

    // The right password from the environment: h2 is back and alive.
    lab.spawn_agent(1, &["--etcd-user", "ovnet"], &[("OVNET_ETCD_PASSWORD", &secret)]).unwrap();
    poll("h2 to answer with the password from the environment", CONVERGE, || {
        let out = lab.ovctl_ok(1, &["host", "ls", "--format", "json"]).ok()?;
        let hosts: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        (hosts.iter().filter(|h| h["alive"] == true).count() == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let (more_sent, more_lost) = pings_both_ways(&lab, (&c1, &ip1), (&c2, &ip2));
    assert_eq!(more_lost, 0);

    let logs = lab.logs();
    assert!(!logs.contains(&secret), "the password is in a log:\n{logs}");
    assert!(!logs.contains(wrong), "the wrong password is in a log:\n{logs}");

    let outcome = Outcome {
        category: "security".into(),
        test: "agents_use_etcd_with_a_user_and_password".into(),
        scenario: "etcd with authentication; agents with --etcd-user and --etcd-password-file or $OVNET_ETCD_PASSWORD; \
                   one restarted with a wrong password, none, a user without one, the password twice"
            .into(),
        held: "network create, connect and pings work; each wrong setting exits non-zero with the flag named; \
               no password in any log"
            .into(),
        pings_sent: pings_sent + more_sent,
        pings_lost: pings_lost + more_lost,
        operations: 9,
        panics: lab.panics(),
        ..Default::default()
    };
    assert_eq!(outcome.panics, 0, "{logs}");
    record(&outcome).unwrap();
}
