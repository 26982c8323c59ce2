//! A container image without a registry: a root file system holding
//! busybox-static and its applet links, imported with `docker import` or
//! `podman import`.
//!
//! The design decision: the image is built from the host's
//! `/bin/busybox` (Debian's busybox-static, a static binary) on every call
//! rather than pulled or kept in git: nothing leaves the machine, and a
//! missing package is a clear error naming it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// A root file system in a temporary directory, deleted on drop.
pub struct Rootfs {
    dir: tempfile::TempDir,
}

impl Rootfs {
    /// `/bin/busybox`, a link per applet in `/bin`, and the empty
    /// directories a runtime mounts over (`/etc`, `/proc`, `/sys`, `/dev`,
    /// `/tmp`, `/root`, `/run`).
    pub fn busybox() -> anyhow::Result<Rootfs> {
        if !Path::new(BUSYBOX).exists() {
            bail!("{BUSYBOX} not found: install busybox-static (apt-get install busybox-static)");
        }
        let dir = tempfile::Builder::new().prefix("ovimg").tempdir()?;
        let root = dir.path();
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
        let list = Command::new(BUSYBOX).arg("--list").output().context("running busybox --list")?;
        for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
        Ok(Rootfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The root file system as a tar stream (`tar -C DIR -c .`).
    pub fn tar(&self) -> anyhow::Result<Vec<u8>> {
        let out = Command::new("tar").arg("-C").arg(self.path()).args(["-c", "."]).output()?;
        if !out.status.success() {
            bail!("tar of the image root failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    }

    /// Pipes the tar stream into `cmd` (e.g. `docker import - NAME`) and
    /// fails unless it succeeds.
    pub fn import_with(&self, cmd: &mut Command) -> anyhow::Result<Output> {
        let tar = self.tar()?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let writer = std::thread::spawn(move || stdin.write_all(&tar));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out)
    }
}

/// The name the lab gives the busybox image.
pub const IMAGE: &str = "ovnet-busybox:lab";

/// `podman import` of the busybox root file system as `name`, with `podman`
/// run as given (its storage flags included).
pub fn podman_import(podman: &mut Command, name: &str) -> anyhow::Result<()> {
    let rootfs = Rootfs::busybox()?;
    rootfs.import_with(podman.args(["import", "-", name]))?;
    Ok(())
}

/// The busybox binary's path, for callers that build their own root.
pub fn busybox_path() -> PathBuf {
    PathBuf::from(BUSYBOX)
}
