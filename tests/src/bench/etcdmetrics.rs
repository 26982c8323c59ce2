//! etcd's own counters, scraped from its Prometheus `/metrics` endpoint in
//! the underlay namespace.
//!
//! The request is plain HTTP/1.0 over a TCP socket opened inside the
//! namespace (no HTTP client needed: HTTP/1.0 answers are neither chunked nor
//! kept alive). Counting requests through etcd rather than inside the agent
//! means the figures hold whatever the agent does, including what it does
//! not know it does (client retries, keep-alive streams).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::nsthread::in_netns;

/// One `name{labels} value` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A whole scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub Vec<Sample>);

/// GET `http://ADDR/metrics` from inside the namespace at `ns`.
pub fn scrape(ns: &Path, addr: SocketAddr) -> anyhow::Result<Metrics> {
    let body = in_netns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("connecting to etcd")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text).context("reading etcd's metrics")?;
        Ok(text)
    })?;
    let (_, body) = body.split_once("\r\n\r\n").context("no HTTP body in etcd's answer")?;
    Ok(parse(body))
}

/// Parses the Prometheus text format (comments and unparsable lines skipped).
pub fn parse(text: &str) -> Metrics {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        out.push(Sample { name: name.to_string(), labels, value });
    }
    Metrics(out)
}

/// `a="x",b="y"` (values hold no commas or quotes in etcd's metrics).
fn labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

impl Metrics {
    /// The sum of every series called `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.0.iter().filter(|s| s.name == name).map(|s| s.value).sum()
    }

    /// Series called `name`, summed by the value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.0.iter().filter(|s| s.name == name) {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }
}

/// `after - before` for every key, dropping zeros.
pub fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_groups() {
        let m = parse(
            "# HELP x\netcd_debugging_mvcc_watch_stream_total 3\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_type=\"unary\"} 5\n\
             grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"Range\",grpc_type=\"unary\"} 1\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_type=\"unary\"} 2\n",
        );
        assert_eq!(m.total("etcd_debugging_mvcc_watch_stream_total"), 3.0);
        let by = m.by("grpc_server_handled_total", "grpc_method");
        assert_eq!(by["Range"], 6.0);
        let before = BTreeMap::from([("Range".to_string(), 4.0), ("Txn".to_string(), 2.0)]);
        assert_eq!(delta(&before, &by), BTreeMap::from([("Range".to_string(), 2.0)]));
    }
}
