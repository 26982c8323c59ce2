//! Applying and healing one fault of the schedule on a running lab, and
//! telling the operations thread (through [`World`]) what changed.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use super::churn::World;
use super::schedule::Fault;
use crate::lab::{Lab, poll};

/// What healing needs to know about an applied fault.
#[derive(Clone, Debug)]
pub struct Applied {
    pub fault: Fault,
    /// The member actually hit (the leader, for `LeaderKill`).
    pub member: Option<usize>,
    /// The bad keys written.
    pub keys: Vec<String>,
}

fn update(world: &Mutex<World>, f: impl FnOnce(&mut World)) {
    match world.lock() {
        Ok(mut w) => f(&mut w),
        Err(p) => f(&mut p.into_inner()),
    }
}

pub(super) fn host_down(world: &Mutex<World>, host: usize) {
    update(world, |w| {
        w.up[host] = false;
        w.host_version[host] += 1;
    });
}

pub(super) fn host_up(world: &Mutex<World>, host: usize) {
    update(world, |w| {
        w.up[host] = true;
        w.host_version[host] += 1;
    });
}

fn set_link(lab: &Lab, host: usize, up: bool) -> anyhow::Result<()> {
    lab.set_host_link(host, up)
}

/// The bad values written by `BadRecords`: not JSON, a future version, wrong types.
const BAD: [(&str, &str); 3] = [
    ("networks/zz-chaos-bad", "\u{1}\u{2}not json"),
    ("endpoints/zz-chaos-bad/10.255.0.9", r#"{"v":99,"id":7}"#),
    ("blocks/zz-chaos-bad/10.255.0.0_26", r#"{"v":1,"network":5}"#),
];

/// Applies `fault`. The world is told before an agent is hit, so no new
/// call is sent to it.
pub fn apply(lab: &mut Lab, world: &Mutex<World>, fault: &Fault) -> anyhow::Result<Applied> {
    let mut applied = Applied { fault: fault.clone(), member: None, keys: Vec::new() };
    match *fault {
        Fault::AgentKill { host } => {
            host_down(world, host);
            lab.kill_agent(host);
        }
        Fault::AgentTerm { host } => {
            host_down(world, host);
            lab.stop_agent(host)?;
        }
        Fault::AgentFreeze { host } => {
            host_down(world, host);
            lab.pause_agent(host)?;
        }
        Fault::MemberKill { member } => {
            lab.etcd_member(member).stop();
            applied.member = Some(member);
        }
        Fault::LeaderKill => {
            let leader = lab.etcd_leader()?;
            lab.etcd_member(leader).stop();
            applied.member = Some(leader);
        }
        Fault::MemberFreeze { member } => {
            lab.etcd_member(member).freeze()?;
            applied.member = Some(member);
        }
        Fault::Outage => {
            update(world, |w| {
                w.quorum = false;
                w.quorum_version += 1;
            });
            for m in 0..lab.etcd_endpoints().len() {
                lab.etcd_member(m).stop();
            }
        }
        Fault::HostDeath { host } | Fault::HostLost { host } => {
            host_down(world, host);
            lab.kill_agent(host);
            set_link(lab, host, false)?;
            if let Fault::HostLost { .. } = fault {
                update(world, |w| w.lost[host] = true);
            }
        }
        Fault::DockerdRestart { .. } | Fault::DockerRmAgentDown { .. } | Fault::PodmanChurn { .. } => {
            anyhow::bail!("{fault:?} is applied by chaos::runtimes")
        }
        Fault::BadRecords => {
            for (key, value) in BAD {
                lab.etcd_put(key, value.as_bytes())?;
                applied.keys.push(format!("{}/{key}", lab.prefix));
            }
        }
    }
    Ok(applied)
}

/// Heals what `apply` did (a lost host stays lost: `ovctl host rm` on host
/// `driver` once its lease ran out). Returns the control-plane calls made.
pub fn heal(lab: &mut Lab, world: &Mutex<World>, applied: &Applied, driver: usize) -> anyhow::Result<()> {
    match applied.fault {
        Fault::AgentKill { host } | Fault::AgentTerm { host } => {
            lab.start_agent(host)?;
            host_up(world, host);
        }
        Fault::AgentFreeze { host } => {
            lab.resume_agent(host)?;
            host_up(world, host);
        }
        Fault::MemberKill { .. } | Fault::LeaderKill => {
            let m = applied.member.context("no member was hit")?;
            lab.etcd_member(m).restart()?;
        }
        Fault::MemberFreeze { .. } => {
            let m = applied.member.context("no member was hit")?;
            lab.etcd_member(m).thaw()?;
        }
        Fault::Outage => {
            lab.etcd_restart_all()?;
            update(world, |w| {
                w.quorum = true;
                w.quorum_version += 1;
            });
        }
        Fault::HostDeath { host } => {
            set_link(lab, host, true)?;
            lab.start_agent(host)?;
            host_up(world, host);
        }
        Fault::HostLost { host } => {
            let name = lab.hosts[host].name.clone();
            poll(&format!("host rm {name}"), Duration::from_secs(30), || {
                lab.ovctl_ok(driver, &["host", "rm", &name]).ok()
            })?;
        }
        Fault::DockerdRestart { .. } | Fault::DockerRmAgentDown { .. } | Fault::PodmanChurn { .. } => {
            anyhow::bail!("{:?} is healed by chaos::runtimes", applied.fault)
        }
        Fault::BadRecords => {
            let keys = applied.keys.clone();
            lab.with_etcd(move |mut c| async move {
                for k in keys {
                    c.delete(k, None).await?;
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}
