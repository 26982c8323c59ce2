//! Memory and CPU of a process, from /proc: resident set (VmRSS), its peak
//! (VmHWM) and CPU seconds (utime + stime).
//!
//! The agent is started as `ip netns exec NS ovagent`, which execs, so the
//! PID the lab knows is the agent's own.

use anyhow::Context;

/// /proc/PID/stat counts in USER_HZ, which the kernel ABI fixes at 100.
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStats {
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub cpu_secs: f64,
}

/// Reads process `pid`.
pub fn read(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |field: &str| -> anyhow::Result<f64> {
        let line =
            status.lines().find_map(|l| l.strip_prefix(field)).with_context(|| format!("no {field}"))?;
        let v: f64 =
            line.split_whitespace().next().unwrap_or("").parse().with_context(|| format!("{field}{line}"))?;
        Ok(v / 1024.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(ProcStats { rss_mib: kib("VmRSS:")?, hwm_mib: kib("VmHWM:")?, cpu_secs: cpu_secs(&stat)? })
}

/// utime + stime of a /proc/PID/stat line, in seconds. The command name may
/// hold spaces and parentheses, so fields are counted after the last ')'.
fn cpu_secs(stat: &str) -> anyhow::Result<f64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of proc(5), utime 14 and stime 15.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields.get(i - 3).context("short stat")?.parse::<f64>().context("stat field")
    };
    Ok((ticks(14)? + ticks(15)?) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_from_stat() {
        let stat = "42 (ov agent) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(cpu_secs(stat).unwrap(), 3.0);
        let me = read(std::process::id()).unwrap();
        assert!(me.rss_mib > 0.0 && me.hwm_mib >= me.rss_mib, "{me:?}");
    }
}
