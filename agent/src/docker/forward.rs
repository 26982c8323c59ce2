//! Lets ovnet's bridged traffic through dockerd's firewall. dockerd (with
//! its default `--iptables`) sets the FORWARD policy to DROP and turns on
//! bridge netfilter, so frames bridged between a container's veth and the
//! VXLAN device traverse iptables' FORWARD chain (in and out interface: the
//! bridge) and would be dropped, as would what containers send out through
//! the host (outbound NAT) and what published ports forward to them. The
//! agent keeps three rules in Docker's chain for users, `DOCKER-USER`:
//!
//! `iptables -I DOCKER-USER -i ovbr+ -o ovbr+ -m comment --comment ovnet -j ACCEPT`
//! `iptables -I DOCKER-USER -i ovbr+ ! -o ovbr+ -m comment --comment ovnet -j ACCEPT`
//! `iptables -I DOCKER-USER -o ovbr+ -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment ovnet -j ACCEPT`
//!
//! (internal networks and traffic between networks are still dropped by the
//! agent's own table: a drop in any table is final).
//!
//! With `--docker-plugin` the rules are kept on any host; without it, only
//! on a host whose FORWARD policy is DROP or that has the chain (see [`plan`]).
//!
//! The design decision: `DOCKER-USER` is the chain Docker leaves to users
//! (it creates it when missing, jumps to it first from FORWARD and never
//! flushes it), so the rule survives dockerd restarts and is in place before
//! dockerd's first start when the agent starts first. Traffic between two
//! ovnet networks is still dropped by the agent's own `inet ovnet` table
//! (every base chain must accept). iptables itself writes the rule, so it is
//! right for iptables-nft and iptables-legacy alike; what to run is planned
//! by the pure [`plan`] from what `iptables -S` lists, and the check is
//! repeated every [`INTERVAL`].

use std::time::Duration;

use tokio::process::Command;
use tracing::{info, warn};

/// Docker's chain for user rules.
pub const CHAIN: &str = "DOCKER-USER";

/// How often the rule is checked.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The rule's arguments after the chain name: inside a bridge.
pub const RULE: [&str; 10] =
    ["-i", "ovbr+", "-o", "ovbr+", "-m", "comment", "--comment", "ovnet", "-j", "ACCEPT"];
/// Out of a bridge to anywhere else (outbound NAT).
pub const OUT_RULE: [&str; 11] =
    ["-i", "ovbr+", "!", "-o", "ovbr+", "-m", "comment", "--comment", "ovnet", "-j", "ACCEPT"];
/// Into a bridge: answers, and connections to published ports.
pub const IN_RULE: [&str; 12] = [
    "-o",
    "ovbr+",
    "-m",
    "conntrack",
    "--ctstate",
    "RELATED,ESTABLISHED,DNAT",
    "-m",
    "comment",
    "--comment",
    "ovnet",
    "-j",
    "ACCEPT",
];

/// Every rule, as `iptables -S` lists it after the chain name.
fn rules() -> [&'static [&'static str]; 3] {
    [&RULE, &OUT_RULE, &IN_RULE]
}

/// One `iptables` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `iptables -N DOCKER-USER`
    CreateChain,
    /// `iptables -I FORWARD -j DOCKER-USER`
    JumpFromForward,
    /// `iptables -I DOCKER-USER <RULE>`
    InsertRule,
    /// `iptables -I DOCKER-USER <OUT_RULE>`
    InsertOutRule,
    /// `iptables -I DOCKER-USER <IN_RULE>`
    InsertInRule,
}

impl Step {
    pub fn args(&self) -> Vec<&'static str> {
        match self {
            Step::CreateChain => vec!["-N", CHAIN],
            Step::JumpFromForward => vec!["-I", "FORWARD", "-j", CHAIN],
            Step::InsertRule => [&["-I", CHAIN][..], &RULE[..]].concat(),
            Step::InsertOutRule => [&["-I", CHAIN][..], &OUT_RULE[..]].concat(),
            Step::InsertInRule => [&["-I", CHAIN][..], &IN_RULE[..]].concat(),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iptables {}", self.args().join(" "))
    }
}

/// What to run, given `iptables -S FORWARD` and `iptables -S DOCKER-USER`
/// (`None` when that chain does not exist). `eager` (with `--docker-plugin`,
/// where the agent may start before dockerd) makes the chain on any host;
/// otherwise only a host that drops forwarded traffic (FORWARD policy DROP)
/// or has the chain already gets the rules.
pub fn plan(forward: &str, chain: Option<&str>, eager: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    let jump = format!("-A FORWARD -j {CHAIN}");
    let drops = forward.lines().any(|l| l.trim() == "-P FORWARD DROP");
    if !eager && chain.is_none() && !drops {
        return steps;
    }
    if chain.is_none() {
        steps.push(Step::CreateChain);
    }
    if !forward.lines().any(|l| l.trim() == jump) {
        steps.push(Step::JumpFromForward);
    }
    let inserts = [Step::InsertRule, Step::InsertOutRule, Step::InsertInRule];
    for (args, step) in rules().into_iter().zip(inserts) {
        let rule = format!("-A {CHAIN} {}", args.join(" "));
        if !chain.unwrap_or_default().lines().any(|l| l.trim() == rule) {
            steps.push(step);
        }
    }
    steps
}

/// `iptables -w 5 ARGS`: stdout, or stderr as the error.
async fn iptables(args: &[&str]) -> Result<String, String> {
    let out = Command::new("iptables").args(["-w", "5"]).args(args).output().await;
    let out = out.map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Lists, plans and applies once; returns the steps run.
pub async fn ensure(eager: bool) -> Result<Vec<Step>, String> {
    let forward = iptables(&["-S", "FORWARD"]).await?;
    let chain = iptables(&["-S", CHAIN]).await.ok();
    let steps = plan(&forward, chain.as_deref(), eager);
    for step in &steps {
        iptables(&step.args()).await.map_err(|e| format!("{step}: {e}"))?;
        info!("{step}");
    }
    Ok(steps)
}

/// Keeps the rules in place until the task is aborted (see [`plan`] for
/// `eager`); a failure is logged once until it clears. Without `eager`, a
/// host without iptables is left alone silently (nothing there drops).
pub async fn run(eager: bool) {
    let mut failing = false;
    loop {
        match ensure(eager).await {
            Ok(_) => failing = false,
            Err(e) if !eager && e.starts_with("running iptables") => {}
            Err(e) if !failing => {
                warn!(error = %e, "cannot let ovnet traffic through dockerd's FORWARD policy; will retry");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE_LINE: &str = "-A DOCKER-USER -i ovbr+ -o ovbr+ -m comment --comment ovnet -j ACCEPT";

    #[test]
    fn plans_only_what_is_missing() {
        let fresh = "-P FORWARD ACCEPT\n";
        let all = [Step::InsertRule, Step::InsertOutRule, Step::InsertInRule];
        assert_eq!(plan(fresh, None, true), [&[Step::CreateChain, Step::JumpFromForward][..], &all].concat());
        let docker = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n";
        let empty = "-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n";
        assert_eq!(plan(docker, Some(empty), true), all);
        let old = format!("-N DOCKER-USER\n{RULE_LINE}\n-A DOCKER-USER -j RETURN\n");
        assert_eq!(plan(docker, Some(&old), true), [Step::InsertOutRule, Step::InsertInRule]);
        let done = format!(
            "-N DOCKER-USER\n{RULE_LINE}\n-A DOCKER-USER {}\n-A DOCKER-USER {}\n-A DOCKER-USER -j RETURN\n",
            OUT_RULE.join(" "),
            IN_RULE.join(" ")
        );
        assert_eq!(plan(docker, Some(&done), true), []);
        assert_eq!(plan(fresh, Some(&done), true), [Step::JumpFromForward]);
    }

    #[test]
    fn without_the_plugin_only_a_host_that_drops_gets_the_rules() {
        let fresh = "-P FORWARD ACCEPT\n";
        assert_eq!(plan(fresh, None, false), []);
        let drops = "-P FORWARD DROP\n";
        assert_eq!(plan(drops, None, false)[..2], [Step::CreateChain, Step::JumpFromForward]);
        let chain = "-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n";
        assert_eq!(plan(fresh, Some(chain), false).len(), 4, "a chain there: Docker runs or ran");
    }

    #[test]
    fn steps_print_as_commands() {
        assert_eq!(Step::InsertRule.to_string(), format!("iptables -I DOCKER-USER {}", &RULE_LINE[15..]));
        assert_eq!(Step::JumpFromForward.to_string(), "iptables -I FORWARD -j DOCKER-USER");
    }
}
