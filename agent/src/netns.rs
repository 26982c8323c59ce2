//! Network namespaces: naming them, checking them, and talking to them.
//!
//! `setns` changes only the calling thread, so nothing here ever calls it on a
//! tokio worker. A netlink socket keeps the namespace it was created in, so
//! what is opened inside outlives the visit. Occasional visits (a dataplane
//! for a lab host, subscriptions, ethtool, `/proc` reads, `check_netns`) run
//! on a short-lived std thread of their own that enters and exits. A connect
//! enters its container's namespace once ([`NetnsHandle`]) and does everything
//! there through the socket it brought back; that visit is made by one
//! long-lived thread that goes in and comes straight back (`setns` costs
//! microseconds, while starting and ending a thread costs 0.03 to 3 ms on a
//! busy 2-core machine: its stack is mapped and unmapped).

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::dataplane::DataplaneError;

/// Where `ip netns add NAME` puts its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The file of a namespace given by name (`/run/netns/NAME`) or by path
/// (anything containing `/`, such as `/proc/PID/ns/net`).
pub fn netns_path(netns: &str) -> PathBuf {
    if netns.contains('/') { PathBuf::from(netns) } else { Path::new(NETNS_DIR).join(netns) }
}

/// Whether `path` is the agent's own network namespace (the host's): the
/// same namespace inode as `/proc/self/ns/net`.
pub fn is_own_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    id(path).is_some_and(|target| Some(target) == id(Path::new("/proc/self/ns/net")))
}

/// Checks that `path` exists and is a network namespace (`ip netns exec NAME true`),
/// by entering it on a scratch thread.
pub fn check_netns(path: &Path) -> Result<(), DataplaneError> {
    let path = path.to_path_buf();
    on_thread("netns-check", move || enter(&path))?
}

/// A network namespace entered once: its file (to create a device directly
/// inside it, `ip link add ... netns NAME`) and a netlink socket opened in it
/// (what `ip -n NAME ...` talks to). Opening one checks that the path is a
/// network namespace. Holding it keeps the namespace alive, so it is meant
/// for the length of one operation.
pub struct NetnsHandle {
    path: PathBuf,
    file: File,
    handle: rtnetlink::Handle,
    /// Indexes of links made in the namespace through this handle, by name.
    made: Mutex<BTreeMap<String, u32>>,
}

impl NetnsHandle {
    /// Enters the namespace at `path` once and brings back its file and a
    /// netlink socket opened there. The socket's connection task runs on the
    /// caller's tokio runtime and ends when the last clone of the handle is
    /// dropped.
    pub async fn open(path: &Path) -> Result<NetnsHandle, DataplaneError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| DataplaneError::Other(format!("no tokio runtime: {e}")))?;
        let file = open_netns(path)?;
        let (inside, on_runtime) = (path.to_path_buf(), runtime.clone());
        let (file, socket) = visit(path, file, move || {
            // The socket registers with the reactor of the runtime it is created in.
            let _guard = on_runtime.enter();
            rtnetlink::new_connection().map_err(|e| netns_error(&inside, e))
        })
        .await?;
        let (connection, handle, _) = socket?;
        runtime.spawn(connection);
        Ok(NetnsHandle { path: path.to_path_buf(), file, handle, made: Mutex::default() })
    }

    /// The namespace file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open namespace file, e.g. for `IFLA_NET_NS_FD`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The netlink socket inside the namespace.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Notes the index of a link made in the namespace, saving a lookup
    /// later in the same operation.
    pub fn note_link(&self, name: &str, index: u32) {
        self.made.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), index);
    }

    /// The index noted for link `name`, if any.
    pub fn noted_link(&self, name: &str) -> Option<u32> {
        self.made.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied()
    }
}

/// A netlink handle whose socket lives inside the namespace at `path`
/// (what `ip -n NAME ...` talks to).
///
/// The connection task runs on the caller's tokio runtime and ends when the
/// last clone of the handle is dropped.
pub async fn handle_in_netns(path: &Path) -> Result<rtnetlink::Handle, DataplaneError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| DataplaneError::Other(format!("no tokio runtime: {e}")))?;
    let (connection, handle, _) = open_in_netns(path, rtnetlink::new_connection).await?;
    runtime.spawn(connection);
    Ok(handle)
}

/// Calls `open` on a dedicated thread inside the namespace at `path`, with
/// the caller's tokio runtime entered: for sockets that must be created there
/// and then serve on the caller's runtime (a socket keeps its namespace).
pub async fn open_in_netns<T, F>(path: &Path, open: F) -> Result<T, DataplaneError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| DataplaneError::Other(format!("no tokio runtime: {e}")))?;
    let path = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn_thread("netns-socket", move || {
        let result = enter(&path).and_then(|()| {
            // The socket registers with the reactor of the runtime it is created in.
            let _guard = runtime.enter();
            open().map_err(|e| netns_error(&path, e))
        });
        // The receiver only goes away if the caller gave up waiting.
        let _ = tx.send(result);
    })?;
    rx.await.map_err(|_| DataplaneError::Other("namespace thread exited without an answer".into()))?
}

/// Runs the blocking `f` on a new thread inside the namespace at `path` and
/// returns its result (for reading `/proc/thread-self/net/...` there).
pub fn run_in_netns<T, F>(path: &Path, f: F) -> Result<T, DataplaneError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = path.to_path_buf();
    on_thread("netns-run", move || enter(&path).map(|()| f()))?
}

/// Runs the future made by `f` to completion on a new thread inside the
/// namespace at `path` (`ip netns exec NAME ...` for async code), with a
/// current-thread runtime of its own. Blocks the calling thread until done.
pub fn block_on_in_netns<T, F>(
    path: &Path,
    f: impl FnOnce() -> F + Send + 'static,
) -> Result<T, DataplaneError>
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    let path = path.to_path_buf();
    on_thread("netns-exec", move || {
        enter(&path)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DataplaneError::Other(format!("runtime in {}: {e}", path.display())))?;
        Ok(runtime.block_on(f()))
    })?
}

/// Opens the namespace file at `path`, e.g. to move a link into it by fd.
/// `/proc/PID/ns/KIND` of any other kind (`mnt`, `uts`, ...) is refused by
/// its name before opening: the kernel may well deny opening another
/// process's namespace, which would hide that it is not a network one.
pub fn open_netns(path: &Path) -> Result<File, DataplaneError> {
    if let Some(kind) = proc_ns_kind(path).filter(|k| *k != "net") {
        let reason = format!("is not a network namespace (it is a {kind} namespace)");
        return Err(DataplaneError::Netns { path: path.to_path_buf(), reason });
    }
    File::open(path).map_err(|e| netns_error(path, e))
}

/// `mnt` for `/proc/1/ns/mnt` (also under `/proc/self`, `/proc/PID/task/TID`):
/// which kind of namespace a `/proc` namespace path names.
fn proc_ns_kind(path: &Path) -> Option<&str> {
    let mut parts = path.strip_prefix("/proc").ok()?.components().rev();
    let kind = parts.next()?.as_os_str().to_str()?;
    (parts.next()?.as_os_str() == "ns").then_some(kind)
}

/// A visit for the visitor thread: enter, work, answer. The thread goes
/// back home afterwards by itself.
type Job = Box<dyn FnOnce() + Send>;

/// The visitor thread's mailbox; `None` until the first visit, and again
/// after the thread could not come back home and ended.
static VISITOR: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Runs `f` inside the namespace of `file` (opened from `path`) on the
/// visitor thread, and hands `file` back with the result.
async fn visit<T, F>(path: &Path, file: File, f: F) -> Result<(File, T), DataplaneError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = path.to_path_buf();
    let job: Job = Box::new(move || {
        let result = enter_file(&path, &file).map(|()| (file, f()));
        // The receiver only goes away if the caller gave up waiting.
        let _ = tx.send(result);
    });
    send_to_visitor(job)?;
    rx.await.map_err(|_| DataplaneError::Other("namespace thread exited without an answer".into()))?
}

/// Hands `job` to the visitor thread, starting one when there is none (or
/// the last one ended).
fn send_to_visitor(job: Job) -> Result<(), DataplaneError> {
    // A panic while holding the lock cannot leave the mailbox half-changed.
    let mut visitor = VISITOR.lock().unwrap_or_else(|e| e.into_inner());
    let job = match visitor.as_ref() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    // The main thread's namespace is the agent's own, and outlives us.
    let home = open_netns(Path::new("/proc/self/ns/net"))?;
    let (tx, rx) = mpsc::channel::<Job>();
    spawn_thread("netns-visitor", move || {
        for job in rx {
            job();
            if let Err(e) = nix::sched::setns(&home, CloneFlags::CLONE_NEWNET) {
                // Staying would run the next visit from the wrong place and
                // keep a container's namespace alive: end, a new thread follows.
                tracing::error!(error = %e, "the namespace thread cannot return home; replacing it");
                return;
            }
        }
    })?;
    tx.send(job).map_err(|_| DataplaneError::Other("the namespace thread ended at once".into()))?;
    *visitor = Some(tx);
    Ok(())
}

/// Moves the calling thread into the namespace at `path`. Only ever called on
/// a thread that exits afterwards.
fn enter(path: &Path) -> Result<(), DataplaneError> {
    enter_file(path, &open_netns(path)?)
}

/// Moves the calling thread into the namespace of `file`, opened from
/// `path`. Only ever called on a thread that exits or comes back afterwards.
fn enter_file(path: &Path, file: &File) -> Result<(), DataplaneError> {
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
        Errno::EINVAL => {
            DataplaneError::Netns { path: path.to_path_buf(), reason: "is not a network namespace".into() }
        }
        other => netns_error(path, io::Error::from(other)),
    })
}

/// Maps an I/O error on a namespace file into a message naming the path.
fn netns_error(path: &Path, err: io::Error) -> DataplaneError {
    let reason = match err.kind() {
        io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => err.to_string(),
    };
    DataplaneError::Netns { path: path.to_path_buf(), reason }
}

fn spawn_thread<F>(name: &str, f: F) -> Result<std::thread::JoinHandle<()>, DataplaneError>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| DataplaneError::Other(format!("spawning thread {name}: {e}")))
}

/// Runs `f` on a fresh thread and waits for its result.
fn on_thread<T, F>(name: &str, f: F) -> Result<T, DataplaneError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| DataplaneError::Other(format!("spawning thread {name}: {e}")))?
        .join()
        .map_err(|_| DataplaneError::Other(format!("thread {name} panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(netns_path("c1"), PathBuf::from("/run/netns/c1"));
        assert_eq!(netns_path("/proc/42/ns/net"), PathBuf::from("/proc/42/ns/net"));
    }

    #[test]
    fn missing_namespace_is_named() {
        let err = check_netns(Path::new("/run/netns/ovnet-does-not-exist")).unwrap_err();
        assert_eq!(err.to_string(), r#"network namespace "/run/netns/ovnet-does-not-exist": does not exist"#);
    }

    #[test]
    fn other_kinds_of_proc_namespaces_are_refused_by_name() {
        assert_eq!(proc_ns_kind(Path::new("/proc/1/ns/mnt")), Some("mnt"));
        assert_eq!(proc_ns_kind(Path::new("/proc/self/task/7/ns/net")), Some("net"));
        assert_eq!(proc_ns_kind(Path::new("/run/netns/mnt")), None);
        assert_eq!(proc_ns_kind(Path::new("/proc/1/status")), None);
        // PID 1's namespaces may not even be readable: the name decides.
        for (path, kind) in
            [("/proc/1/ns/mnt", "mnt"), ("/proc/self/ns/uts", "uts"), ("/proc/thread-self/ns/pid", "pid")]
        {
            let err = check_netns(Path::new(path)).unwrap_err().to_string();
            assert!(
                err.ends_with(&format!("is not a network namespace (it is a {kind} namespace)")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let err = check_netns(Path::new("/proc/self/status")).unwrap_err();
        assert!(err.to_string().ends_with("is not a network namespace"), "{err}");
    }

    #[test]
    fn own_namespace_is_one() {
        check_netns(Path::new("/proc/self/ns/net")).unwrap();
        assert!(is_own_netns(Path::new("/proc/self/ns/net")));
        assert!(is_own_netns(Path::new("/proc/thread-self/ns/net")));
        assert!(!is_own_netns(Path::new("/proc/self/ns/mnt")));
        assert!(!is_own_netns(Path::new("/run/netns/ovnet-does-not-exist")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handle_checks_the_path_once() {
        let missing = NetnsHandle::open(Path::new("/run/netns/ovnet-does-not-exist")).await;
        let err = missing.err().expect("no namespace there");
        assert_eq!(err.to_string(), r#"network namespace "/run/netns/ovnet-does-not-exist": does not exist"#);
        let plain = NetnsHandle::open(Path::new("/proc/self/status")).await.err().expect("not a namespace");
        assert!(plain.to_string().ends_with("is not a network namespace"), "{plain}");
        let own = NetnsHandle::open(Path::new("/proc/self/ns/net")).await.expect("own namespace");
        assert_eq!(own.path(), Path::new("/proc/self/ns/net"));
        // Visits run one after the other on one thread, which comes back home.
        let visits = (0..8).map(|_| NetnsHandle::open(Path::new("/proc/thread-self/ns/net")));
        for handle in futures::future::join_all(visits).await {
            handle.expect("a visit");
        }
    }
}
