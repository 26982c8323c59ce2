//! The first hour of a newcomer: the README's two commands run as printed on
//! a root shell without sudo, `tests/setup.sh` stops early and says why when
//! the Rust toolchain is missing or too old, and the demo prints commands
//! that paste and run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ovnet_tests::lab::bin_dir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo().join(file)).unwrap()
}

/// `rust-version` of the workspace.
fn msrv() -> String {
    let toml = read("Cargo.toml");
    let line = toml.lines().find(|l| l.starts_with("rust-version = ")).expect("rust-version in Cargo.toml");
    line.trim_start_matches("rust-version = ").trim_matches('"').to_string()
}

#[test]
fn the_readme_commands_need_no_sudo_and_name_the_toolchain() {
    let readme = read("README.md");
    let section = readme.split("\n## Two commands").nth(1).expect("a 'Two commands' section");
    let section = section.split("\n## ").next().unwrap();
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    let commands: Vec<&str> = block.lines().map(|l| l.split('#').next().unwrap().trim()).collect();
    assert!(commands.contains(&"tests/demo.sh"), "{block}");
    assert!(commands.contains(&"tests/run.sh"), "{block}");
    // A root shell on a minimal Debian has no sudo; a user with rustup is told how.
    assert!(!block.contains("sudo"), "{block}");
    assert!(section.contains(r#"sudo env "PATH=$PATH" tests/run.sh"#), "{section}");
    assert!(section.contains(&format!("Rust {}", msrv())), "the README must state rust-version {}", msrv());
    assert!(section.contains("tests/setup.sh"), "{section}");
}

/// A directory of links to the few programs `tests/setup.sh` needs before
/// its toolchain checks, plus stubs written by the test.
struct Bin(tempfile::TempDir);

impl Bin {
    fn new() -> Bin {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["id", "sed", "dirname", "awk", "sort", "head", "env", "bash"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
            let path = String::from_utf8(found.stdout).unwrap();
            std::os::unix::fs::symlink(path.trim(), dir.path().join(tool)).unwrap();
        }
        Bin(dir)
    }

    fn stub(self, name: &str, script: &str) -> Bin {
        use std::os::unix::fs::PermissionsExt;
        let file = self.0.path().join(name);
        std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// `tests/setup.sh ARGS` with only this directory on PATH.
    fn setup(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(self.0.path().join("bash"))
            .arg(repo().join("tests/setup.sh"))
            .args(args)
            .env_clear()
            .env("PATH", self.0.path())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

/// Fails with `want` in its message, before installing anything.
fn stops(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(want), "expected {want:?} in: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("apt"), "it went on to apt-get");
}

#[test]
fn setup_stops_early_when_the_toolchain_is_missing_or_too_old() {
    let old = "echo 'rustc 1.80.0 (051478957 2024-07-21)'";
    let new = "echo 'rustc 99.0.0 (0 2099-01-01)'";
    stops(&Bin::new().setup(&[], &[]), "cargo not found on PATH");
    let sudo = Bin::new().setup(&[], &[("SUDO_USER", "alice")]);
    stops(&sudo, r#"sudo env "PATH=$PATH" tests/run.sh"#);
    let no_rustc = Bin::new().stub("cargo", "exit 0");
    stops(&no_rustc.setup(&[], &[]), "rustc not found on PATH");
    let too_old = Bin::new().stub("cargo", "exit 0").stub("rustc", old);
    stops(
        &too_old.setup(&[], &[]),
        &format!("rustc 1.80.0 is too old: ovnet needs Rust {} or newer", msrv()),
    );
    let no_fmt = Bin::new().stub("cargo", r#"[ "$1" = fmt ] && exit 1; exit 0"#).stub("rustc", new);
    stops(&no_fmt.setup(&["--test"], &[]), "rustfmt not found");
    let no_clippy = Bin::new().stub("cargo", r#"[ "$1" = clippy ] && exit 101; exit 0"#).stub("rustc", new);
    stops(&no_clippy.setup(&["--test"], &[]), "clippy not found");
}

/// `ovlab demo --keep` running; on drop it is stopped the way a user would
/// (SIGTERM once the lab is up) so the lab is torn down.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    up: bool,
    /// Its stderr, shown when it fails.
    stderr: tempfile::NamedTempFile,
}

impl Demo {
    fn start() -> Demo {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(bin_dir().join("ovlab"))
            .args(["demo", "--hosts", "2", "--keep"])
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("target/debug/ovlab (cargo build --workspace --bins)");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Bytes, not `lines()`: a stray non-UTF-8 byte must not end the
        // reader (ovlab would then die of a broken pipe mid-demo).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines, up: false, stderr }
    }

    /// Every line up to the end of the look-around block.
    fn until_up(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen = Vec::new();
        while !self.up {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.up = line.starts_with("stop: ");
                    seen.push(line);
                }
                Err(_) => {
                    let status = ovnet_tests::lab::poll("ovlab to exit", Duration::from_secs(30), || {
                        self.child.try_wait().ok().flatten()
                    });
                    let stderr = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
                    panic!(
                        "the demo did not come up ({status:?}):\n{}\n-- its stderr:\n{stderr}",
                        seen.join("\n")
                    )
                }
            }
        }
        seen
    }

    /// SIGTERM, then its exit status and the rest of its output.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = ovnet_tests::lab::poll("ovlab to exit", Duration::from_secs(60), || {
            self.child.try_wait().ok().flatten()
        })
        .unwrap();
        self.up = false;
        // The reader ends at the pipe's end, after the last line.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            rest.push(line);
        }
        (status, rest.join("\n"))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // Before the lab is up a signal would kill it uncleanly: let a
        // failing demo end by itself (it tears its lab down).
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.up && Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            self.up =
                self.lines.recv_timeout(Duration::from_millis(200)).is_ok_and(|l| l.starts_with("stop: "));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.stop();
        }
    }
}

#[test]
fn the_demo_prints_commands_that_paste_and_run() {
    let mut demo = Demo::start();
    let out = demo.until_up();
    let text = out.join("\n");
    let commands: Vec<&str> = out.iter().filter_map(|l| l.strip_prefix("$ ")).collect();
    let path = commands.iter().find(|c| c.starts_with("export PATH=")).expect("an export PATH line");
    // The narrative's ovctl lines name a real agent socket.
    let connect = commands.iter().find(|c| c.contains(" network connect demo ")).expect("a connect line");
    let socket = connect.strip_prefix("ovctl -H unix://").and_then(|r| r.split(' ').next()).unwrap();
    assert!(Path::new(socket).exists(), "{connect}: no socket at {socket}");
    // The look-around block, pasted as one script, runs: every line succeeds.
    let block = text.split("== the lab stays up").nth(1).expect("a look-around block");
    let script: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("$ ")).collect();
    for want in
        ["export OVNET_HOST=unix://", "ovctl doctor", "ping -c 3", "bridge fdb show", "etcdctl", "tail "]
    {
        assert!(script.iter().any(|c| c.contains(want)), "no {want:?} in the look-around block:\n{block}");
    }
    let narrative: Vec<&str> =
        commands.iter().copied().filter(|c| c.ends_with(" host ls") || c.ends_with(" network ls")).collect();
    assert_eq!(narrative.len(), 2, "{text}");
    let script = format!("set -e\n{path}\n{}\n{}\n", narrative.join("\n"), script.join("\n"));
    let ran = Command::new("bash").args(["-c", &script]).env_remove("OVNET_HOST").output().unwrap();
    assert!(
        ran.status.success(),
        "the printed commands failed:\n{script}\n{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    let lab_dir = block.lines().find_map(|l| l.trim().strip_prefix("lab directory ")).unwrap();
    let lab_dir = PathBuf::from(lab_dir.split(' ').next().unwrap());
    assert!(lab_dir.is_dir());
    // Stopping as the block says tears everything down.
    let (status, rest) = demo.stop();
    assert!(status.success(), "ovlab exited with {status}: {rest}");
    assert!(rest.contains("all cross-host pings succeeded"), "{rest}");
    assert!(!lab_dir.exists(), "{} is still there", lab_dir.display());
    let underlay = text.lines().find_map(|l| l.trim().strip_prefix("underlay namespace ")).unwrap();
    let lab_ns = underlay.split(' ').next().unwrap().trim_end_matches('u');
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(lab_ns),
        "the lab's namespaces ({lab_ns}*) are left"
    );
}

#[test]
fn ovlab_has_a_help() {
    let out = Command::new(bin_dir().join("ovlab")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("demo") && help.contains("--hosts"), "{help}");
    let out = Command::new(bin_dir().join("ovlab")).args(["demo", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--hosts <N>") && help.contains("--keep"), "{help}");
}
