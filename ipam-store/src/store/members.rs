//! One etcd client per cluster member, and which member calls go to.
//!
//! etcd-client balances one channel over all endpoints at random and cannot
//! be told to avoid a member: after a member is killed every third request
//! still goes to it and fails, and a member that is frozen, or a new leader
//! in etcd 3.4 that drops read-index requests until its first commit, holds a
//! request until the whole request timeout is spent (issue #15: `network
//! create` failed with two of three members up). So the store keeps a client
//! per member and sends every call to one *preferred* member; a call that
//! fails or stalls there moves the preference on to the next member, and the
//! retry goes there. The design decision: stickiness. A transaction follows
//! the read it was decided on to the member that has just answered, so a
//! request that cannot be repeated safely is rarely sent to a bad member.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::error::{Error, connect_error};

/// The members' clients and the preferred one; cheap to clone.
#[derive(Clone)]
pub(crate) struct Members {
    /// A client per endpoint, None while it could not be made (only with
    /// authentication, which talks to the member while connecting).
    clients: Arc<Vec<RwLock<Option<Client>>>>,
    preferred: Arc<AtomicUsize>,
    /// The first client made, for when the preferred member has none.
    fallback: Client,
}

impl Members {
    /// A client per endpoint. Refused credentials or a certificate that does
    /// not verify end it at once; members that cannot be reached are
    /// connected again in the background. Fails if no member could be made.
    pub(crate) async fn connect(
        endpoints: &[String],
        opts: &ConnectOptions,
        deadline: Duration,
    ) -> Result<Members, Error> {
        let mut clients = Vec::new();
        let mut last = None;
        for url in endpoints {
            match tokio::time::timeout(deadline, Client::connect([url], Some(opts.clone()))).await {
                Ok(Ok(c)) => clients.push(RwLock::new(Some(c))),
                Ok(Err(e)) => {
                    let e = connect_error(url, &e);
                    if matches!(e, Error::EtcdAuth { .. } | Error::EtcdTls { .. }) {
                        return Err(e);
                    }
                    last = Some(e);
                    clients.push(RwLock::new(None));
                }
                Err(_) => {
                    last = Some(Error::EtcdUnavailable(format!("no answer from {url} within {deadline:?}")));
                    clients.push(RwLock::new(None));
                }
            }
        }
        let first = clients.iter().find_map(|c| c.read().ok().and_then(|c| c.clone()));
        let Some(fallback) = first else {
            return Err(last.unwrap_or_else(|| Error::EtcdUnavailable("no etcd endpoint configured".into())));
        };
        let members = Members { clients: Arc::new(clients), preferred: Default::default(), fallback };
        let missing: Vec<usize> = (0..endpoints.len()).filter(|&i| members.slot(i).is_none()).collect();
        if let Some(&i) = missing.first() {
            members.preferred.store((i + 1) % endpoints.len(), Ordering::SeqCst);
        }
        for i in missing {
            members.reconnect_later(i, endpoints[i].clone(), opts.clone());
        }
        Ok(members)
    }

    fn slot(&self, i: usize) -> Option<Client> {
        self.clients[i].read().ok().and_then(|c| c.clone())
    }

    /// Keeps trying to make member `i`'s client, once a second.
    fn reconnect_later(&self, i: usize, url: String, opts: ConnectOptions) {
        let clients = Arc::downgrade(&self.clients);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(clients) = clients.upgrade() else { return };
                if let Ok(Ok(c)) =
                    tokio::time::timeout(Duration::from_secs(3), Client::connect([&url], Some(opts.clone())))
                        .await
                    && let Ok(mut slot) = clients[i].write()
                {
                    *slot = Some(c);
                    return;
                }
            }
        });
    }

    /// Which member calls go to now.
    pub(crate) fn current(&self) -> usize {
        self.preferred.load(Ordering::SeqCst) % self.clients.len()
    }

    /// The preferred member's client (the next one that has a client, if
    /// it has none yet).
    pub(crate) fn client(&self) -> Client {
        let n = self.clients.len();
        let start = self.current();
        (0..n).find_map(|k| self.slot((start + k) % n)).unwrap_or_else(|| self.fallback.clone())
    }

    /// A call to member `i` failed or stalled: prefer the next member, unless
    /// another call has already moved on.
    pub(crate) fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self.preferred.compare_exchange(i, next, Ordering::SeqCst, Ordering::SeqCst);
    }
}
