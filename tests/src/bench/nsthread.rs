//! Running a piece of code inside a lab namespace.
//!
//! `setns` moves only the calling thread, so [`in_netns`] does it on a
//! scratch thread that exits afterwards and never on the caller's. What the
//! closure opens there (a netlink, raw ICMP or TCP socket) keeps that
//! namespace for its whole life, so the usual pattern is: open the socket in
//! the namespace, hand it back, use it from anywhere.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use nix::sched::CloneFlags;

/// `/run/netns/NAME`, the file `ip netns add NAME` made.
pub fn ns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result.
pub fn in_netns<T, F>(path: &Path, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("ovbench-netns".into())
        .spawn(move || {
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", path.display()))?;
            f()
        })
        .context("spawning a namespace thread")?
        .join()
        .map_err(|_| anyhow!("the thread inside {shown} panicked"))?
}

/// Runs the future made by `f` to completion on a current-thread tokio
/// runtime inside the namespace at `path` (etcd clients in the lab connect
/// from the underlay namespace, where etcd listens).
pub fn block_on_in_netns<T, Fut, F>(path: &Path, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    F: FnOnce() -> Fut + Send + 'static,
{
    in_netns(path, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(f())
    })
}
