//! `--cni-conf-dir`: keeps one CNI conflist per ovnet network in a
//! directory, so `podman run --network NAME` (or any CNI runtime reading
//! that directory) finds every network of the cluster on every host.
//!
//! Level-triggered like the reconcile loop: each published cluster state,
//! and a periodic resync, compare the directory with what it should hold
//! (`conflist::plan`) and apply the difference. A write goes to a hidden
//! temporary file renamed over the conflist, so a runtime never reads half
//! a file. The state last seen stays in force while etcd is unreachable:
//! files are only removed when a network is gone from a state we saw.

pub mod conflist;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ovnet_ipam_store::ClusterState;
use tracing::{info, warn};

use self::conflist::{FileOp, Observed, SUFFIX};
use crate::config::Listen;
use crate::watch::StateRx;

/// The address the conflists give the plugin: the agent's own `--listen`.
/// Refused with TLS, which the plugin does not speak (it runs on the same
/// host: the Unix socket is the way).
pub fn agent_address(listen: &Listen, tls: bool) -> Result<String, String> {
    if tls {
        return Err(format!(
            "--cni-conf-dir: the ovnet CNI plugin does not speak TLS, but the API on {listen} does; \
             serve the API on a unix:// --listen (the default) for the plugin"
        ));
    }
    Ok(listen.to_string())
}

/// Follows the cluster state until the task is dropped, keeping `dir` in
/// step; `agent` is the address the plugin dials (the agent's `--listen`).
pub async fn run(dir: PathBuf, agent: String, node: String, mut state: StateRx, resync: Duration) {
    loop {
        let snapshot = state.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let (dir, agent, node) = (dir.clone(), agent.clone(), node.clone());
            let synced =
                tokio::task::spawn_blocking(move || sync(&dir, &agent, &node, &snapshot.state)).await;
            if let Err(e) = synced {
                warn!(error = %e, "updating the CNI conflists failed");
            }
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(resync) => {}
        }
    }
}

/// One pass: reads `dir`, plans, applies; failures are logged and retried
/// on the next pass.
pub fn sync(dir: &Path, agent: &str, node: &str, state: &ClusterState) {
    let observed = match observe(dir) {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, dir = %dir.display(), "reading the CNI configuration directory failed");
            return;
        }
    };
    for op in conflist::plan(&conflist::desired(state, agent, node), &observed) {
        let path = |file: &str| dir.join(file);
        let done = match &op {
            FileOp::Write { file, content } => write_atomic(&path(file), content),
            FileOp::Remove { file } => match std::fs::remove_file(path(file)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            FileOp::Blocked { file } => {
                warn!(file = %path(file).display(), "a conflist not written by ovnet has the name of an ovnet network; leaving it");
                continue;
            }
        };
        match (done, &op) {
            (Ok(()), FileOp::Write { file, .. }) => {
                info!(file = %path(file).display(), "CNI conflist written")
            }
            (Ok(()), FileOp::Remove { file }) => info!(file = %path(file).display(), "CNI conflist removed"),
            (Err(e), _) => warn!(error = %e, op = ?op, "updating a CNI conflist failed; will retry"),
            _ => {}
        }
    }
}

/// The conflists in `dir` (created when missing).
fn observe(dir: &Path) -> std::io::Result<Observed> {
    std::fs::create_dir_all(dir)?;
    let mut observed = Observed::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(file) = entry.file_name().into_string() else { continue };
        if !file.ends_with(SUFFIX) || file.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        // A file that vanished or cannot be read is not ours to touch.
        if let Ok(content) = std::fs::read_to_string(entry.path()) {
            observed.add(file, content);
        } else {
            observed.foreign.insert(file);
        }
    }
    Ok(observed)
}

/// Writes `content` to a hidden temporary file beside `path` (one libcni
/// does not load) and renames it over `path`.
fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("conflist");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::network;

    /// Waits up to 5 s for `f` to hold.
    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..250 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn follows_the_state_and_the_resync_repairs_a_deleted_file() {
        let dir = tempfile::tempdir().unwrap();
        let blue = dir.path().join("blue.conflist");
        let (tx, rx) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(run(
            dir.path().to_path_buf(),
            "unix:///a".into(),
            "h1".into(),
            rx,
            Duration::from_millis(50),
        ));
        let mut s = ClusterState::default();
        s.networks.insert("blue".into(), network("blue", 4096, "10.128.0.0/16"));
        tx.send_replace(Some(crate::watch::Snapshot::new(s)));
        until("blue's conflist", || blue.exists()).await;
        std::fs::remove_file(&blue).unwrap();
        until("blue's conflist again", || blue.exists()).await;
        tx.send_replace(Some(crate::watch::Snapshot::new(ClusterState::default())));
        until("blue's conflist removed", || !blue.exists()).await;
        task.abort();
    }

    #[test]
    fn the_plugin_dials_the_agents_listen_address() {
        let unix: Listen = "unix:///run/x/a.sock".parse().unwrap();
        assert_eq!(agent_address(&unix, false).unwrap(), "unix:///run/x/a.sock");
        let tcp: Listen = "tcp://127.0.0.1:7000".parse().unwrap();
        assert_eq!(agent_address(&tcp, false).unwrap(), "tcp://127.0.0.1:7000");
        assert!(agent_address(&tcp, true).unwrap_err().contains("does not speak TLS"));
    }

    #[test]
    fn a_pass_writes_removes_and_keeps_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("net.d");
        let mut s = ClusterState::default();
        s.networks.insert("blue".into(), network("blue", 4096, "10.128.0.0/16"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("old.conflist"), conflist::conflist("old", "unix:///a")).unwrap();
        std::fs::write(sub.join("87-podman.conflist"), r#"{"plugins":[{"type":"bridge"}]}"#).unwrap();
        sync(&sub, "unix:///a", "h1", &s);
        let mut files: Vec<_> =
            std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["87-podman.conflist", "blue.conflist"], "no temporary file left");
        let blue = std::fs::read_to_string(sub.join("blue.conflist")).unwrap();
        assert_eq!(blue, conflist::conflist("blue", "unix:///a"));
        s.networks.clear();
        sync(&sub, "unix:///a", "h1", &s);
        assert!(!sub.join("blue.conflist").exists());
        assert!(sub.join("87-podman.conflist").exists());
    }
}
