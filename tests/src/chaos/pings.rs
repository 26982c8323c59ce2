//! All-pairs pings at 10 ms for a whole chaos run, with every loss timed.
//!
//! One `ping -i 0.01` process per ordered pair of long-lived containers; a
//! thread per process reads its reply lines as they come. A jump in
//! `icmp_seq` is a loss, timed from the last reply before it to the first
//! after it, so the runner can tell a loss toward a host that was dead by
//! design from one that breaks the datapath invariant.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;

use super::check::Loss;

/// What one stream has seen so far.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub received: u64,
    /// The highest sequence number answered.
    pub last_seq: u64,
    /// When (seconds since the start) the last reply came.
    pub last_at: f64,
    pub losses: Vec<Loss>,
}

/// One pair's ping process and what its reader has seen.
pub struct Stream {
    pub from_host: usize,
    pub to_host: usize,
    child: Option<Child>,
    seen: Arc<Mutex<Seen>>,
}

/// `icmp_seq=N` of a reply line (`64 bytes from ...`), if it is one.
pub fn reply_seq(line: &str) -> Option<u64> {
    if !line.contains("bytes from") {
        return None;
    }
    let rest = &line[line.find("icmp_seq=")? + "icmp_seq=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Folds one reply into what a stream has seen.
pub fn record(seen: &mut Seen, seq: u64, at: f64, from_host: usize, to_host: usize) {
    if seq > seen.last_seq + 1 && seen.received > 0 {
        seen.losses.push(Loss {
            from_host,
            to_host,
            lost: seq - seen.last_seq - 1,
            start: seen.last_at,
            end: at,
        });
    }
    seen.received += 1;
    seen.last_seq = seen.last_seq.max(seq);
    seen.last_at = at;
}

impl Stream {
    /// Starts pinging `dst` from container namespace `ns` every 10 ms.
    pub fn start(
        ns: &str,
        dst: &str,
        from_host: usize,
        to_host: usize,
        t0: Instant,
    ) -> anyhow::Result<Stream> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-i", "0.01", dst])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        let out = child.stdout.take().context("ping has no stdout")?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Some(seq) = reply_seq(&line)
                    && let Ok(mut s) = shared.lock()
                {
                    record(&mut s, seq, t0.elapsed().as_secs_f64(), from_host, to_host);
                }
            }
        });
        Ok(Stream { from_host, to_host, child: Some(child), seen })
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the process; what it saw stays readable.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_and_gaps() {
        assert_eq!(reply_seq("64 bytes from 10.1.0.3: icmp_seq=17 ttl=64 time=0.1 ms"), Some(17));
        assert_eq!(reply_seq("From 10.1.0.1 icmp_seq=3 Destination Host Unreachable"), None);
        assert_eq!(reply_seq("PING 10.1.0.3 (10.1.0.3) 56(84) bytes of data."), None);
        let mut s = Seen::default();
        record(&mut s, 1, 0.01, 0, 1);
        record(&mut s, 2, 0.02, 0, 1);
        record(&mut s, 7, 0.07, 0, 1);
        assert_eq!(s.received, 3);
        assert_eq!(s.losses, vec![Loss { from_host: 0, to_host: 1, lost: 4, start: 0.02, end: 0.07 }]);
        // A late (out of order) reply is no loss.
        record(&mut s, 6, 0.08, 0, 1);
        assert_eq!(s.losses.len(), 1);
    }
}
