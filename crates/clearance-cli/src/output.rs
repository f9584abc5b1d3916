//! Outcomes of a command, their exit codes, and printing.

use std::process::ExitCode;

/// How a command failed. Each kind has its own documented exit code.
#[derive(Debug)]
pub enum Failure {
    /// The control plane decided `deny` (already printed).
    Denied,
    /// A clearance did not verify.
    Rejected(String),
    /// Not authenticated, not authorized, or rate limited.
    Unauthorized(String),
    /// The control plane cannot be reached or cannot record decisions.
    Unavailable(String),
    Error(anyhow::Error),
    /// Exit with this code, having reported already (`exec` passes the command's on).
    Exit(i32),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Error(e)
    }
}

pub(crate) fn report(failure: Failure) -> ExitCode {
    let (status, kind, message) = match failure {
        Failure::Denied => return ExitCode::from(3),
        Failure::Exit(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Failure::Rejected(m) => (4, "rejected", m),
        Failure::Unauthorized(m) => (5, "unauthorized", m),
        Failure::Unavailable(m) => (6, "unavailable", m),
        // `{:#}` prints the context chain on one line: "reading x: no such file".
        Failure::Error(e) => (1, "error", format!("{e:#}")),
    };
    if json_requested(std::env::args_os()) {
        // The same shape as the API's errors, with the server's code when it gave one.
        let (code, message) = split_code(&message).unwrap_or((kind, &message));
        let body = serde_json::json!({ "error": { "code": code, "message": message, "exit_code": status } });
        eprintln!("{body}");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(status)
}

/// Whether the command line asked for JSON (`--json` before any `--`).
fn json_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.skip(1).take_while(|a| a != "--").any(|a| a == "--json")
}

/// `"invalid_api_key: ..."` as the API's code and its message, if it starts with one.
fn split_code(message: &str) -> Option<(&'static str, &str)> {
    let (code, rest) = message.split_once(": ")?;
    clearance_model::ErrorCode::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .map(|c| (c.as_str(), rest))
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Error(e.into()))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_asked_for_only_before_the_command_separator() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>().into_iter();
        assert!(json_requested(args(&["clearance", "log", "checkpoint", "--json"])));
        assert!(!json_requested(args(&["clearance", "exec", "--", "tool", "--json"])));
        assert!(!json_requested(args(&["--json"])));
    }

    #[test]
    fn an_api_code_is_split_from_its_message() {
        assert_eq!(
            split_code("invalid_api_key: missing API key"),
            Some(("invalid_api_key", "missing API key"))
        );
        assert_eq!(split_code("reading `x`: no such file"), None);
    }
}
