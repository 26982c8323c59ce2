//! Usage errors in ovctl's own voice, and the value parsers whose messages
//! name what is wrong with a value.
//!
//! clap finds a bad flag or value before any connection is made; its default
//! rendering (`error: invalid value '...' for '--subnet <CIDR>'`) would be a
//! second style beside the agent's `ovctl: ...` messages. So every usage
//! error is rewritten here from clap's error context into one line,
//! `ovctl: invalid --subnet "10.200.0.0": ...`, with names and values in
//! double quotes as the agent writes them, followed by the usage line. Help
//! and version output stay clap's.

use std::error::Error as _;
use std::net::Ipv4Addr;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use ipnet::Ipv4Net;

use crate::error::CtlError;

/// `--subnet`: an IPv4 CIDR, saying what is missing or wrong.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(match s.parse::<Ipv4Addr>() {
            Ok(addr) => format!("the prefix length is missing (a CIDR such as {addr}/16)"),
            Err(_) => "not an IPv4 CIDR such as 10.128.0.0/16".into(),
        });
    };
    if addr.parse::<Ipv4Addr>().is_err() {
        return Err(format!("{addr:?} is not an IPv4 address (a CIDR such as 10.128.0.0/16)"));
    }
    match len.parse::<u8>() {
        Ok(n) if n <= 32 => s.parse().map_err(|e| format!("{e}")),
        _ => Err(format!("the prefix length {len:?} is not a number from 0 to 32")),
    }
}

/// `--ip`: one IPv4 address, without a prefix length.
pub fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| match s.split_once('/') {
        Some((addr, _)) if addr.parse::<Ipv4Addr>().is_ok() => {
            format!("an address without a prefix length is expected, such as {addr}")
        }
        _ => "not an IPv4 address such as 10.128.0.5".to_string(),
    })
}

/// The one-line message and usage line of a clap usage error.
pub fn message(e: &clap::Error) -> String {
    let mut text = format!("ovctl: {}\n", first_line(e));
    if let Some(ContextValue::StyledStr(usage)) = e.get(ContextKind::Usage) {
        let usage = usage.to_string();
        let usage = usage.trim().trim_start_matches("Usage:").trim();
        let command: Vec<&str> =
            usage.split_whitespace().take_while(|w| !w.starts_with(['[', '<'])).collect();
        text.push_str(&format!("usage: {usage} (see {} --help)\n", command.join(" ")));
    }
    text
}

fn first_line(e: &clap::Error) -> String {
    let string = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let strings = |kind| match e.get(kind) {
        Some(ContextValue::Strings(v)) => v.clone(),
        Some(ContextValue::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let arg = string(ContextKind::InvalidArg);
    match (e.kind(), arg, string(ContextKind::InvalidValue)) {
        (ErrorKind::InvalidValue, Some(arg), Some(value)) if value.is_empty() => {
            format!("{} needs a value", arg_name(&arg))
        }
        (ErrorKind::InvalidValue, Some(arg), Some(value)) => {
            let valid = strings(ContextKind::ValidValue);
            format!("invalid {} {value:?}: expected {}", arg_name(&arg), one_of(&valid))
        }
        (ErrorKind::ValueValidation, Some(arg), Some(value)) => {
            format!("invalid {} {value:?}: {}", arg_name(&arg), reason(e))
        }
        (ErrorKind::UnknownArgument, Some(arg), _) => {
            format!("unknown flag {arg:?}{}", suggest(&strings(ContextKind::SuggestedArg)))
        }
        (ErrorKind::InvalidSubcommand, _, _) => {
            let command = string(ContextKind::InvalidSubcommand).unwrap_or_default();
            format!("unknown command {command:?}{}", suggest(&strings(ContextKind::SuggestedSubcommand)))
        }
        (ErrorKind::MissingRequiredArgument, _, _) => {
            let missing = strings(ContextKind::InvalidArg);
            format!("missing {}", missing.join(", "))
        }
        _ => {
            // Kinds without a rewrite: clap's own first line, without its prefix.
            let rendered = e.to_string();
            let line = rendered.lines().next().unwrap_or_default();
            line.trim_start_matches("error:").trim().to_string()
        }
    }
}

/// `--subnet <CIDR>` -> `--subnet`; a positional `<SHELL>` -> `shell`.
fn arg_name(arg: &str) -> String {
    if arg.starts_with('-') {
        arg.split_whitespace().next().unwrap_or(arg).to_string()
    } else {
        arg.trim_matches(['<', '>']).to_lowercase()
    }
}

/// What a value parser said, without repeating the value.
fn reason(e: &clap::Error) -> String {
    match e.source() {
        Some(source) => match source.downcast_ref::<CtlError>() {
            Some(CtlError::InvalidAddress { reason, .. }) => reason.clone(),
            _ => in_words(&source.to_string()),
        },
        None => "invalid value".into(),
    }
}

/// clap's ranged number parsers say `0 is not in 1..=16777215`: in words.
fn in_words(reason: &str) -> String {
    let Some((_, range)) = reason.split_once(" is not in ") else {
        return reason.to_string();
    };
    let Some((low, high)) = range.split_once("..") else {
        return reason.to_string();
    };
    // `1..=32` is inclusive; `1..N` excludes N, and the type's maximum there
    // means no upper bound.
    let (inclusive, high) = match high.strip_prefix('=') {
        Some(h) => (true, h),
        None => (false, high),
    };
    match high.parse::<u128>() {
        Ok(h) if !inclusive && h >= u128::from(u32::MAX) => format!("must be at least {low}"),
        Ok(h) if !inclusive => format!("must be from {low} to {}", h.saturating_sub(1)),
        Ok(h) => format!("must be from {low} to {h}"),
        Err(_) if high.is_empty() => format!("must be at least {low}"),
        Err(_) => reason.to_string(),
    }
}

fn one_of(valid: &[String]) -> String {
    let quoted: Vec<String> = valid.iter().map(|v| format!("{v:?}")).collect();
    match quoted.as_slice() {
        [] => "another value".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn suggest(candidates: &[String]) -> String {
    match candidates.first() {
        Some(c) => format!("; did you mean {c:?}?"),
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
