//! `ovnet`: the CNI plugin of ovnet. A container runtime runs it with the
//! CNI environment and a network configuration on stdin; it connects or
//! disconnects the container through the local `ovagent` and prints the
//! CNI result or error JSON (exit 0 or 1). All the logic is in
//! `ovnet_ctl::cni`; this only reads the process's input.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;

use ovnet_ctl::addr::AgentAddr;
use ovnet_ctl::client::{Agent, Target};
use ovnet_ctl::cni::plugin::{self, Reply};
use ovnet_ctl::cni::{CniError, code, reply};
use ovnet_ctl::error::CtlError;
use ovnet_ctl::tls::Mode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let reply = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => plugin::run(|k| std::env::var(k).ok(), &stdin, dial).await,
        Err(e) => {
            let e = CniError::new(code::IO_FAILURE, format!("cannot read stdin: {e}"));
            Reply { stdout: format!("{}\n", reply::error(None, &e)), ok: false }
        }
    };
    let mut out = std::io::stdout().lock();
    let written = out.write_all(reply.stdout.as_bytes()).and_then(|()| out.flush());
    if reply.ok && written.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The agent at `addr`, over its socket or plain TCP.
async fn dial(addr: AgentAddr) -> Result<Agent, CtlError> {
    Agent::connect(&Target { addr, tls: None, mode: Mode::Plain }).await
}
