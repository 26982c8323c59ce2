//! A steady stream of pings between two containers while something breaks,
//! counted by the real `ping` at the end.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// `ping -i INTERVAL -c COUNT` running in a container namespace.
pub struct PingStream {
    child: Option<Child>,
    what: String,
}

/// What a finished stream counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingTally {
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
}

impl PingTally {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

impl PingStream {
    /// Starts pinging `dst` from namespace `ns` every `interval`, for `count`
    /// requests; the last reply is waited for at most 2 s.
    pub fn start(ns: &str, dst: &str, interval: Duration, count: u64) -> anyhow::Result<PingStream> {
        let secs = format!("{:.3}", interval.as_secs_f64());
        let deadline = (interval.as_secs_f64() * count as f64).ceil() as u64 + 30;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-q", "-W", "2", "-i", &secs])
            .args(["-c", &count.to_string(), "-w", &deadline.to_string(), dst])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ping")?;
        Ok(PingStream { child: Some(child), what: format!("ping from {ns} to {dst}") })
    }

    /// Waits for the stream to end and returns its counts.
    pub fn finish(mut self) -> anyhow::Result<PingTally> {
        let child = self.child.take().context("already finished")?;
        let out = child.wait_with_output().context("waiting for ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse(&text).with_context(|| {
            format!(
                "{}: no summary in its output:\n{text}{}",
                self.what,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for PingStream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads `N packets transmitted, M received, +D duplicates, ...`.
pub fn parse(text: &str) -> anyhow::Result<PingTally> {
    let line = text.lines().find(|l| l.contains("packets transmitted")).context("no summary line")?;
    let mut tally = PingTally { sent: 0, received: 0, duplicates: 0 };
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
        let n: u64 = match n.trim_start_matches('+').parse() {
            Ok(n) => n,
            Err(_) => continue,
        };
        match what {
            "packets" => tally.sent = n,
            "received" => tally.received = n,
            "duplicates" => tally.duplicates = n,
            _ => {}
        }
    }
    if tally.sent == 0 {
        bail!("no packets transmitted: {line}");
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summaries() {
        let t = parse("--- 10.0.0.2 ping statistics ---\n3000 packets transmitted, 2998 received, +1 duplicates, 0.0667% packet loss, time 31000ms\n").unwrap();
        assert_eq!(t, PingTally { sent: 3000, received: 2998, duplicates: 1 });
        assert_eq!(t.lost(), 2);
        let t = parse("5 packets transmitted, 5 received, 0% packet loss, time 40ms").unwrap();
        assert_eq!(t.lost(), 0);
        assert!(parse("nothing").is_err());
    }
}
