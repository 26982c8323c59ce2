//! A watch on every key under the prefix, as plain put/delete batches.
//!
//! The agent is level-triggered: it uses watch batches to learn that
//! something changed (and the revision it changed at), then re-reads. The
//! design decision: any end of the stream — compaction, cancellation by
//! etcd, a broken connection — is an error, never a silent `None`, so the
//! caller always knows to watch again from the last batch's revision + 1, or
//! take a fresh `snapshot()` when that revision was compacted (the distinct
//! `Error::Compacted`). A batch's revision is its last event's, as etcd's own
//! client resumes, never the response header's.

use etcd_client::{EventType, WatchOptions, WatchStream};

use super::members::Members;
use super::{EtcdStore, key_string};
use crate::error::Error;

/// One change under the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// The events etcd sent together, and the store revision they bring us to.
/// A progress notification is a batch with no events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision this batch is complete up to: the last event's
    /// `mod_revision`, or the response header's revision for a batch without
    /// events. Resume from it + 1. (etcd catches a watcher up in chunks of
    /// at most 1,000 revisions but stamps every chunk with the *current*
    /// revision: resuming from the header would skip the chunks not yet sent.)
    pub revision: i64,
    pub events: Vec<WatchEvent>,
}

/// An open watch; dropping it cancels the watch.
pub struct StoreWatch {
    /// Holds both the request sender (keeping the watch open) and the responses.
    stream: WatchStream,
    endpoints: String,
    /// The member it is open on, told when the watch ends so that the next
    /// one opens on another member (a cut-off member would cancel it again).
    members: Members,
    member: usize,
}

impl EtcdStore {
    /// Watches every key under the prefix, starting at `from_revision`
    /// (inclusive; use the snapshot revision + 1). The watch requires a
    /// leader: on a member that loses the quorum etcd cancels it, which ends
    /// it with an error, and the caller watches again, on the next member
    /// (issue #16: re-opened through a balanced client, it could land on the
    /// cut-off member again and again).
    pub async fn watch(&self, from_revision: i64) -> Result<StoreWatch, Error> {
        let opts =
            WatchOptions::new().with_prefix().with_start_revision(from_revision).with_progress_notify();
        let member = self.watchers.current();
        let mut c = self.watchers.client().watch_client().max_decoding_message_size(super::MAX_MESSAGE);
        let opened = tokio::time::timeout(self.request_timeout, c.watch(self.keys.all(), Some(opts))).await;
        let stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.watchers.failed(member);
                return Err(match crate::error::is_unavailable(&e) {
                    true => {
                        Error::EtcdUnavailable(format!("opening a watch: {} failed: {e}", self.endpoints))
                    }
                    false => Error::Etcd(e),
                });
            }
            Err(_) => {
                self.watchers.failed(member);
                return Err(Error::EtcdUnavailable(format!(
                    "opening a watch: no answer from {} within {:?}",
                    self.endpoints, self.request_timeout
                )));
            }
        };
        Ok(StoreWatch { stream, endpoints: self.endpoints.clone(), members: self.watchers.clone(), member })
    }
}

impl StoreWatch {
    /// The next batch of changes. Waits as long as nothing changes; HTTP/2
    /// keep-alives turn a dead etcd into an error within a few seconds.
    /// Never returns `Ok(None)` today: every end of the stream is an `Err`.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, Error> {
        let next = self.receive().await;
        if let Err(Error::EtcdUnavailable(_) | Error::WatchEnded { .. } | Error::Etcd(_)) = &next {
            self.members.failed(self.member);
        }
        next
    }

    async fn receive(&mut self) -> Result<Option<WatchBatch>, Error> {
        loop {
            let msg = match self.stream.message().await {
                Ok(m) => m,
                Err(e) if crate::error::is_unavailable(&e) => {
                    return Err(Error::EtcdUnavailable(format!("watch on {} broke: {e}", self.endpoints)));
                }
                Err(e) => return Err(Error::Etcd(e)),
            };
            let Some(resp) = msg else {
                return Err(Error::WatchEnded { reason: "etcd closed the watch stream".to_string() });
            };
            if resp.compact_revision() > 0 {
                return Err(Error::Compacted { compact_revision: resp.compact_revision() });
            }
            if resp.canceled() {
                let reason = match resp.cancel_reason() {
                    "" => "etcd canceled the watch".to_string(),
                    r => format!("etcd canceled the watch: {r}"),
                };
                return Err(Error::WatchEnded { reason });
            }
            if resp.created() && resp.events().is_empty() {
                continue;
            }
            let header = resp.header().map_or(0, |h| h.revision());
            let last_event = resp.events().iter().filter_map(|ev| ev.kv()).map(|kv| kv.mod_revision()).max();
            let revision = last_event.unwrap_or(header);
            let events = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    let key = key_string(kv.key());
                    Some(match ev.event_type() {
                        EventType::Put => WatchEvent::Put { key, value: kv.value().to_vec() },
                        EventType::Delete => WatchEvent::Delete { key },
                    })
                })
                .collect();
            return Ok(Some(WatchBatch { revision, events }));
        }
    }
}
