//! Supervision of the agent's long-running tasks (watch, registration,
//! reconcile, releases, the metrics listener).
//!
//! None of them is meant to end while the agent runs: each retries its own
//! failures. So the design decision: any end — a return or a panic — is fatal.
//! `run` logs which task ended and why, marks `/healthz` unhealthy and exits
//! non-zero (systemd restarts the agent; the datapath stays in place, as on
//! any stop), instead of answering the API from a view that no longer moves.

use std::future::pending;

use tokio::task::{JoinError, JoinHandle};
use tracing::error;

use crate::metrics::Metrics;

/// A named task the agent cannot run without.
pub struct Task {
    pub name: &'static str,
    pub handle: JoinHandle<()>,
}

impl Task {
    pub fn spawn(name: &'static str, fut: impl Future<Output = ()> + Send + 'static) -> Task {
        Task { name, handle: tokio::spawn(fut) }
    }
}

/// Waits until the first of `tasks` ends and says which and why; never
/// completes when there are none.
pub async fn first_end(tasks: &mut [Task]) -> String {
    if tasks.is_empty() {
        return pending().await;
    }
    let (result, i, _) = futures::future::select_all(tasks.iter_mut().map(|t| &mut t.handle)).await;
    let name = tasks[i].name;
    match result {
        Ok(()) => format!("the {name} task ended"),
        Err(e) => format!("the {name} task {}", why(e)),
    }
}

fn why(e: JoinError) -> String {
    if !e.is_panic() {
        return "was cancelled".to_string();
    }
    let panic = e.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    format!("panicked: {message}")
}

/// Runs `api` (which ends on shutdown) while watching `tasks`: when one of
/// them ends first, logs which and why, marks the agent unhealthy and
/// returns that as the error (the caller exits non-zero).
pub async fn serve_supervised(
    api: impl Future<Output = anyhow::Result<()>>,
    tasks: &mut [Task],
    metrics: &Metrics,
) -> anyhow::Result<()> {
    tokio::select! {
        served = api => served,
        why = first_end(tasks) => {
            metrics.unhealthy(why.clone());
            error!(reason = %why, "a task of the agent ended; exiting (the datapath stays in place)");
            Err(anyhow::Error::msg(why))
        }
    }
}

/// Ends every task (on a stop, or after one ended).
pub fn abort_all(tasks: &[Task]) {
    for t in tasks {
        t.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_ending_ends_the_agent_unhealthy_and_a_shutdown_does_not() {
        let metrics = Metrics::new();
        let mut tasks =
            vec![Task::spawn("watch", async { panic!("boom") }), Task::spawn("reconcile", pending())];
        let err = serve_supervised(pending(), &mut tasks, &metrics).await.unwrap_err();
        assert_eq!(err.to_string(), "the watch task panicked: boom");
        assert_eq!(metrics.health(), Err("the watch task panicked: boom".to_string()));
        abort_all(&tasks);

        let metrics = Metrics::new();
        let mut tasks = vec![Task::spawn("watch", pending())];
        serve_supervised(async { Ok(()) }, &mut tasks, &metrics).await.unwrap();
        assert_eq!(metrics.health(), Ok(()));
        abort_all(&tasks);
    }

    #[tokio::test]
    async fn a_task_that_returns_or_panics_is_named() {
        let mut tasks = vec![
            Task::spawn("watch", pending()),
            Task::spawn("reconcile", async { panic!("lost the plot") }),
        ];
        assert_eq!(first_end(&mut tasks).await, "the reconcile task panicked: lost the plot");
        let mut tasks = vec![Task::spawn("watch", async {}), Task::spawn("reconcile", pending())];
        assert_eq!(first_end(&mut tasks).await, "the watch task ended");
        abort_all(&tasks);
        let mut none: Vec<Task> = Vec::new();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(10), first_end(&mut none)).await;
        assert!(waited.is_err(), "no tasks: never ends");
    }
}
