//! Guarded transactions that may be sent again.
//!
//! A transaction that reached a member and got no answer may or may not be
//! applied: a follower whose leader was just killed holds the proposal until
//! etcd's own timeout, longer than ours (chaos finding of #15: a connect
//! failed with a quorum up, its transaction stuck on such a follower). A
//! transaction whose compares cover every key it writes cannot be applied
//! twice, so it may be sent again to the next member; what is left to know is
//! whether a *failed* compare means "somebody else won" or "our earlier send
//! won". The caller names one key that tells ([`Witness`]); after an
//! unanswered send, a failed compare is decided by reading it.

use std::time::Duration;

use etcd_client::{Compare, Txn, TxnOp};

use super::{EtcdStore, FIRST_ATTEMPT, RESEND, Read, never_sent};
use crate::error::{Error, is_unavailable};

/// What the key says once the transaction is applied.
pub(crate) enum Witness<'a> {
    /// `key` holds exactly `value` (a record with a fresh id).
    Holds { key: &'a str, value: &'a [u8] },
    /// `key` is gone.
    Absent { key: &'a str },
}

impl Witness<'_> {
    fn key(&self) -> &str {
        match self {
            Witness::Holds { key, .. } | Witness::Absent { key } => key,
        }
    }

    /// Whether `found` (the key's value, if any) shows the transaction applied.
    fn applied(&self, found: Option<&[u8]>) -> bool {
        match (self, found) {
            (Witness::Holds { value, .. }, Some(v)) => v == *value,
            (Witness::Holds { .. }, None) => false,
            (Witness::Absent { .. }, found) => found.is_none(),
        }
    }
}

/// Time kept back from the request timeout for the read that decides an
/// unanswered send.
const READ_BACK: Duration = Duration::from_millis(400);

impl EtcdStore {
    /// One guarded transaction (`Ok(false)`: a compare failed), sent again
    /// to the next member when a member stalls or fails, within one request
    /// timeout. `witness` decides whether an earlier unanswered send was the
    /// one applied.
    pub(crate) async fn commit_witnessed(
        &self,
        what: &str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        witness: Witness<'_>,
    ) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut patience = FIRST_ATTEMPT;
        let mut pause = Duration::from_millis(10);
        let mut unanswered = false;
        loop {
            let member = self.members.current();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let limit = left.saturating_sub(READ_BACK).min(patience).max(Duration::from_millis(50));
            let mut c = self.client();
            let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
            let error = match tokio::time::timeout(limit, c.txn(txn)).await {
                Ok(Ok(resp)) if resp.succeeded() => return Ok(true),
                Ok(Ok(_)) if !unanswered => return Ok(false),
                Ok(Ok(_)) => return self.witnessed(what, &witness, deadline, None).await,
                Ok(Err(e)) if !is_unavailable(&e) => return Err(Error::Etcd(e)),
                Ok(Err(e)) => {
                    unanswered |= !never_sent(&e);
                    Error::EtcdUnavailable(format!("{what}: {} failed: {e}", self.endpoints))
                }
                Err(_) => {
                    unanswered = true;
                    Error::EtcdUnavailable(format!(
                        "{what}: no answer from {} within {:?}",
                        self.endpoints, self.request_timeout
                    ))
                }
            };
            self.members.failed(member);
            let now = tokio::time::Instant::now();
            if now + READ_BACK + Duration::from_millis(50) >= deadline {
                return match unanswered {
                    true => self.witnessed(what, &witness, deadline, Some(error)).await,
                    false => Err(error),
                };
            }
            tracing::debug!(%error, what, member, "etcd transaction unanswered; sending it to the next member");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
            patience = RESEND;
        }
    }

    /// Reads the witness key (within what is left before `deadline`, at
    /// least a moment) to tell whether an unanswered send was applied.
    /// Without an answer, `error` (or a lost-answer error) is returned.
    async fn witnessed(
        &self,
        what: &str,
        witness: &Witness<'_>,
        deadline: tokio::time::Instant,
        error: Option<Error>,
    ) -> Result<bool, Error> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let read = self.read(what, vec![Read::Key(witness.key().to_string())]);
        let found = match tokio::time::timeout(left.max(Duration::from_millis(100)), read).await {
            Ok(Ok((_, mut res))) => res.pop().and_then(|kvs| kvs.into_iter().next()).map(|kv| kv.value),
            _ => {
                return Err(error.unwrap_or_else(|| {
                    Error::EtcdUnavailable(format!(
                        "{what}: the answer was lost and {} did not tell",
                        self.endpoints
                    ))
                }));
            }
        };
        let applied = witness.applied(found.as_deref());
        if applied {
            tracing::info!(what, key = witness.key(), "an unanswered send was applied");
        }
        match (applied, error) {
            (true, _) => Ok(true),
            (false, Some(e)) => Err(e),
            (false, None) => Ok(false),
        }
    }
}
