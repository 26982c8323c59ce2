//! The etcd layer: typed reads, guarded transactions and watches.
//!
//! [`EtcdStore`] is a cheap-to-clone handle over one etcd client. Decisions
//! (which subnet, VNI, block or address) are made by the pure `alloc` module
//! on a consistent read; the store then claims the result in ONE transaction
//! whose compares fail if anything that decision depended on changed, and
//! retries with a fresh read. The design decision a reader must know: every
//! etcd call is bounded by `request_timeout` (on top of the client's own
//! timeouts), so with etcd down every call fails with
//! `Error::EtcdUnavailable` within a few seconds instead of hanging.

mod cached;
mod endpoints;
mod hosts;
mod members;
mod networks;
mod update;
mod watch;
mod witnessed;

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use members::Members;

pub use endpoints::{EndpointOffer, NewEndpoint};
pub use hosts::HostStatus;
pub use networks::NewNetwork;
pub use watch::{StoreWatch, WatchBatch, WatchEvent};
pub(crate) use witnessed::Witness;

use crate::error::{Error, is_unavailable};
use crate::keys::Keys;
use crate::records::{BlockRecord, EndpointRecord, NetworkRecord};
use crate::state::{BadRecord, ClusterState};

/// Transactions that lose a race are retried this many times before
/// `Error::Contention`.
const MAX_ATTEMPTS: u32 = 100;

/// How to reach etcd and where ovnet's keys live.
#[derive(Clone)]
pub struct StoreConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// etcd user name and password, when etcd has authentication enabled.
    pub user: Option<(String, String)>,
    /// TLS towards etcd (CA, optional client certificate); the endpoints
    /// must then be https://.
    pub tls: Option<etcd_client::TlsOptions>,
}

/// Written by hand only to keep the etcd password out of logs.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user", &self.user.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            prefix: "/ovnet".to_string(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(4),
            user: None,
            tls: None,
        }
    }
}

/// The first try of a repeatable request gets this long before the next
/// member is tried; each further try gets [`RESEND`].
const FIRST_ATTEMPT: Duration = Duration::from_millis(1000);
/// How long a try after the first waits before the next member is tried
/// too. Short, and not growing: a request stuck on a follower whose leader
/// is frozen never answers, and the election that replaces the leader
/// takes one to two seconds, so what counts is how many tries reach a
/// member after it (ovchaos seed 1796600384664797030: a connect during a
/// member freeze tried 1 s, 1.5 s, then 1.1 s on three members, the last
/// the frozen one, and failed with a quorum up). A merely slow cluster
/// loses nothing: a read's earlier tries stay in flight, and a guarded
/// transaction's earlier send, if applied, shows in its witness.
const RESEND: Duration = Duration::from_millis(600);

/// A handle on the cluster's records in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    members: Members,
    /// A client per member again, with `require_leader` (see `watch`).
    watchers: Members,
    keys: Keys,
    /// The endpoints, comma separated, for error messages.
    endpoints: String,
    request_timeout: Duration,
    /// The lease this store's host writes its blocks and endpoints on (0: none).
    reservation: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// One key as read from etcd.
#[derive(Clone, Debug)]
pub(crate) struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// One read inside a consistent multi-read.
pub(crate) enum Read {
    Key(String),
    Prefix(String),
}

impl EtcdStore {
    /// Connects and checks that etcd answers (a count-only read of the prefix).
    pub async fn connect(cfg: StoreConfig) -> Result<EtcdStore, Error> {
        let endpoints = cfg.endpoints.join(",");
        if cfg.endpoints.is_empty() {
            return Err(Error::EtcdUnavailable("no etcd endpoint configured".into()));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_timeout(cfg.request_timeout)
            // Not more often than etcd's --grpc-keepalive-min-time (5 s by
            // default): etcd closes a connection that pings more often
            // ("too many pings"), and an idle watch broke every 8 s.
            .with_keep_alive(Duration::from_secs(6), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &cfg.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &cfg.tls {
            opts = opts.with_tls(tls.clone());
        }
        let deadline = cfg.connect_timeout.max(cfg.request_timeout);
        // Watches go through their own clients that require a leader: a
        // member cut off from the quorum cancels them ("no leader") instead
        // of keeping them open and silent (flannel does the same).
        let watch_opts = opts.clone().with_require_leader(true);
        let (members, watchers) = tokio::join!(
            Members::connect(&cfg.endpoints, &opts, deadline),
            Members::connect(&cfg.endpoints, &watch_opts, deadline)
        );
        let store = EtcdStore {
            members: members?,
            watchers: watchers?,
            keys: Keys::new(&cfg.prefix),
            endpoints,
            request_timeout: cfg.request_timeout,
            reservation: Default::default(),
        };
        let probe = GetOptions::new().with_prefix().with_count_only();
        store
            .retried_if("connecting", probe_transient, true, || {
                let mut c = store.client();
                let (key, probe) = (store.keys.all(), probe.clone());
                async move { c.get(key, Some(probe)).await }
            })
            .await
            .map_err(|e| match e {
                Error::Etcd(e) => crate::error::connect_error(&store.endpoints, &e),
                e => e,
            })?;
        Ok(store)
    }

    /// From now on, blocks and endpoints written through this store (and its
    /// clones) are attached to `lease`, the host's reservation.
    pub fn set_reservation(&self, lease: i64) {
        self.reservation.store(lease, std::sync::atomic::Ordering::SeqCst);
    }

    /// How to put a block or endpoint record: on the reservation, if any.
    pub(crate) fn owned_put(&self) -> Option<etcd_client::PutOptions> {
        match self.reservation.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            lease => Some(etcd_client::PutOptions::new().with_lease(lease)),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A client of the member calls go to now (see `members`).
    pub fn client(&self) -> Client {
        self.members.client()
    }

    /// Runs one etcd call bounded by the request timeout, mapping connection
    /// failures to `EtcdUnavailable`; the call is not repeated, but the
    /// next call goes to another member if this one failed or stalled.
    pub(crate) async fn timed<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        let member = self.members.current();
        let result = match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_unavailable(&e) => {
                Err(Error::EtcdUnavailable(format!("{what}: {} failed: {e}", self.endpoints)))
            }
            Ok(Err(e)) => return Err(Error::Etcd(e)),
            Err(_) => Err(Error::EtcdUnavailable(format!(
                "{what}: no answer from {} within {:?}",
                self.endpoints, self.request_timeout
            ))),
        };
        self.members.failed(member);
        result
    }

    /// Like `timed`, for requests that are safe to repeat (reads, lease
    /// grants and renewals, unconditional puts): a transient failure (a
    /// member down, a leader election in progress) is retried until the
    /// request timeout runs out.
    pub(crate) async fn retried<T, F>(&self, what: &str, call: impl FnMut() -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.retried_if(what, is_unavailable, true, call).await
    }

    /// Like `timed`, retrying the failures `transient` accepts until the
    /// request timeout runs out, each time on the next member. A
    /// `repeatable` request is also sent to the next member when one stalls
    /// (hedged: the tries before stay in flight and the first answer
    /// counts); any other is waited for, as it may be applied.
    async fn retried_if<T, F>(
        &self,
        what: &str,
        transient: fn(&etcd_client::Error) -> bool,
        repeatable: bool,
        mut call: impl FnMut() -> F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let no_answer =
            || format!("{what}: no answer from {} within {:?}", self.endpoints, self.request_timeout);
        let mut pause = Duration::from_millis(10);
        let mut patience = FIRST_ATTEMPT;
        // What a member said when it failed: more telling than a later
        // attempt's timeout (etcd hanging up on a client without a
        // certificate, say).
        let mut said: Option<String> = None;
        let mut tries = futures::stream::FuturesUnordered::new();
        let mut next_try = tokio::time::Instant::now();
        let mut latest = self.members.current();
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::EtcdUnavailable(said.unwrap_or_else(no_answer)));
            }
            if now >= next_try && (repeatable || tries.is_empty()) {
                latest = self.members.current();
                let attempt = call();
                let member = latest;
                tries.push(async move { (member, attempt.await) });
                next_try = if repeatable { now + patience } else { deadline };
                patience = RESEND;
            }
            tokio::select! {
                Some((member, result)) = tries.next() => match result {
                    Ok(v) => return Ok(v),
                    Err(e) if !transient(&e) && !is_unavailable(&e) => return Err(Error::Etcd(e)),
                    Err(e) => {
                        self.members.failed(member);
                        if !transient(&e) {
                            // Refused credentials or a certificate that does
                            // not verify keep their kind: the agent exits on
                            // them instead of retrying forever.
                            return Err(match crate::error::connect_error(&self.endpoints, &e) {
                                refused @ (Error::EtcdAuth { .. } | Error::EtcdTls { .. }) => refused,
                                _ => Error::EtcdUnavailable(format!("{what}: {} failed: {e}", self.endpoints)),
                            });
                        }
                        tracing::debug!(error = %e, what, member, "transient etcd failure; retrying on the next member");
                        said = Some(format!("{what}: {} failed: {e}", self.endpoints));
                        next_try = next_try.min(tokio::time::Instant::now() + pause);
                        pause = (pause * 2).min(Duration::from_millis(400));
                    }
                },
                _ = tokio::time::sleep_until(next_try.min(deadline)) => {
                    if !tries.is_empty() && repeatable {
                        // The latest try stalled: the next goes elsewhere.
                        self.members.failed(latest);
                    }
                    if !repeatable && !tries.is_empty() && tokio::time::Instant::now() >= deadline {
                        self.members.failed(latest);
                        return Err(Error::EtcdUnavailable(no_answer()));
                    }
                }
            }
        }
    }

    /// Several reads at one revision (a compare-less transaction).
    pub(crate) async fn read(&self, what: &str, reads: Vec<Read>) -> Result<(i64, Vec<Vec<Kv>>), Error> {
        let ops: Vec<TxnOp> = reads
            .into_iter()
            .map(|r| match r {
                Read::Key(k) => TxnOp::get(k, None),
                Read::Prefix(p) => TxnOp::get(p, Some(GetOptions::new().with_prefix())),
            })
            .collect();
        let resp = self
            .retried(what, || {
                let mut c = self.client();
                let txn = Txn::new().and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let results = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().iter().map(to_kv).collect(),
                _ => Vec::new(),
            })
            .collect();
        Ok((revision, results))
    }

    /// One guarded transaction; `Ok(false)` when a compare failed.
    pub(crate) async fn commit(
        &self,
        what: &str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<bool, Error> {
        // Only a request that never left (no connection to that member) is
        // repeated: one that reached etcd may have been applied.
        let resp = self
            .retried_if(what, never_sent, false, || {
                let mut c = self.client();
                let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    /// Reads one prefix and decodes it, logging (and skipping) bad records.
    async fn state_of(&self, what: &str, prefix: String) -> Result<ClusterState, Error> {
        let (revision, mut results) = self.read(what, vec![Read::Prefix(prefix)]).await?;
        let kvs = results.pop().unwrap_or_default();
        let (state, bad) = ClusterState::from_kvs(
            &self.keys,
            revision,
            kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())),
        );
        log_bad(&bad);
        Ok(state)
    }

    /// The network called `name`.
    pub async fn get_network(&self, name: &str) -> Result<NetworkRecord, Error> {
        let key = self.keys.network(name);
        let (_, mut res) = self.read("reading a network", vec![Read::Key(key.clone())]).await?;
        match res.pop().and_then(|kvs| kvs.into_iter().next()) {
            Some(kv) => crate::records::decode(&key, &kv.value),
            None => Err(Error::NetworkNotFound(name.to_string())),
        }
    }

    /// All networks, by name.
    pub async fn list_networks(&self) -> Result<Vec<NetworkRecord>, Error> {
        let state = self.state_of("listing networks", self.keys.networks_prefix()).await?;
        Ok(state.networks.into_values().collect())
    }

    /// The blocks of one network, or of all networks; sorted by network and address.
    pub async fn list_blocks(&self, network: Option<&str>) -> Result<Vec<BlockRecord>, Error> {
        let prefix = match network {
            Some(n) => self.keys.blocks_prefix(n),
            None => self.keys.all_blocks_prefix(),
        };
        Ok(self.state_of("listing blocks", prefix).await?.all_blocks().cloned().collect())
    }

    /// The endpoints of one network, or of all networks; sorted by network and address.
    pub async fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<EndpointRecord>, Error> {
        let prefix = match network {
            Some(n) => self.keys.endpoints_prefix(n),
            None => self.keys.all_endpoints_prefix(),
        };
        Ok(self.state_of("listing endpoints", prefix).await?.all_endpoints().cloned().collect())
    }

    /// Every key under the prefix with its value, and the revision of the
    /// read. Read in pages of [`SNAPSHOT_PAGE`] keys, all at the revision of
    /// the first page, so no single answer approaches a message limit
    /// whatever the cluster's size (etcd's own client and Kubernetes' list
    /// do the same); a page whose revision was compacted meanwhile is
    /// `Error::Compacted`, and the caller lists again.
    pub async fn snapshot(&self) -> Result<(i64, Vec<(String, Vec<u8>)>), Error> {
        let prefix = self.keys.all();
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.into_bytes();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(SNAPSHOT_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let key = from.clone();
            let resp = self
                .retried("taking a snapshot", || {
                    let mut kv = self.client().kv_client().max_decoding_message_size(MAX_MESSAGE);
                    let (key, opts) = (key.clone(), opts.clone());
                    async move { kv.get(key, Some(opts)).await }
                })
                .await
                .map_err(|e| compacted_at(e, revision))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            kvs.extend(resp.kvs().iter().map(|kv| (key_string(kv.key()), kv.value().to_vec())));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((revision, kvs)),
            }
        }
    }
}

/// Keys per page of a snapshot: at a few hundred bytes a record, a page is
/// well under a megabyte.
pub const SNAPSHOT_PAGE: i64 = 1_000;

/// The largest answer this client accepts (etcd-client's default is 4 MiB).
/// Pages keep reads far below it; a watch response can carry one
/// transaction's events, e.g. every endpoint a network removal deleted.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The end of the range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A read at `revision` that etcd refused as compacted becomes `Error::Compacted`.
fn compacted_at(e: Error, revision: i64) -> Error {
    match e {
        Error::Etcd(ref inner) if revision > 0 && inner.to_string().contains("compacted") => {
            Error::Compacted { compact_revision: revision }
        }
        other => other,
    }
}

/// Whether a failed probe of a new connection is worth repeating on another
/// member: a member that cannot be reached, not refused credentials.
fn probe_transient(e: &etcd_client::Error) -> bool {
    is_unavailable(e) && matches!(crate::error::connect_error("", e), Error::EtcdUnavailable(_))
}

/// Whether a failed request never reached etcd: the client could not even
/// connect to the member it picked (it was down), so repeating it is safe.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}

fn key_string(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn to_kv(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: key_string(kv.key()),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

pub(crate) fn log_bad(bad: &[BadRecord]) {
    for b in bad {
        tracing::warn!(key = %b.key, reason = %b.reason, "skipping bad record in etcd");
    }
}

/// How many candidates to spread over on this attempt: 1 at first (lowest
/// free wins when nobody races), then doubling up to 64.
pub(crate) fn spread(attempt: u32) -> usize {
    1usize << attempt.min(6)
}

/// A random index below `len` (0 when `len` is 0).
pub(crate) fn roll(len: usize) -> usize {
    if len <= 1 { 0 } else { rand::random_range(0..len) }
}

/// A short random pause before retrying a transaction that lost a race.
pub(crate) async fn backoff(attempt: u32) {
    let max_ms = u64::from(attempt.min(20)) + 1;
    let ms = rand::random_range(0..=max_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
