//! `ovctl`: the command line of ovnet. It talks gRPC to the `ovagent` of its
//! host (a Unix socket by default) and prints what the agent answers.
//!
//! # Exit codes
//!
//! These are stable; scripts may rely on them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the agent answered with an error (printed as `ovctl: <message>`), or the output could not be written |
//! | 2 | usage error: bad flag, argument or value, TLS flags that do not fit the address, an unusable TLS file; refused before contacting the agent (clap's own code) |
//! | 3 | the agent could not be reached (including a failed TLS handshake), or did not answer within `--timeout` |
//! | 4 | `ovctl doctor` found at least one problem (listed on stdout) |
//!
//! Code 1 covers every status the agent returns, including `Unavailable`
//! (which the agent uses when etcd is unreachable); code 3 is only for
//! failures to talk to the agent itself.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ovnet_ctl::cli::Cli;
use ovnet_ctl::error::{self, EXIT_OK};
use ovnet_ctl::{commands, usage};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let mut out = String::new();
    let result = commands::run(cli, &mut out).await;
    let written = write_stdout(&out);
    let code = match result.and(written) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("ovctl: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

/// A usage error as `ovctl: ...` and exit 2; --help and --version print as
/// clap does and exit 0 (help for a bare `ovctl network` goes to stderr, exit 2).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { error::EXIT_USAGE } else { EXIT_OK })
        }
        _ => {
            eprint!("{}", usage::message(&e));
            ExitCode::from(error::EXIT_USAGE)
        }
    }
}

/// Writes the output; a closed pipe (`ovctl network ls | head -1`) is fine.
fn write_stdout(text: &str) -> Result<(), error::CtlError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
