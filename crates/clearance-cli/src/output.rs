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
    let (code, message) = match failure {
        Failure::Denied => return ExitCode::from(3),
        Failure::Exit(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Failure::Rejected(m) => (4, m),
        Failure::Unauthorized(m) => (5, m),
        Failure::Unavailable(m) => (6, m),
        // `{:#}` prints the context chain on one line: "reading x: no such file".
        Failure::Error(e) => (1, format!("{e:#}")),
    };
    eprintln!("error: {message}");
    ExitCode::from(code)
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Error(e.into()))?;
    println!("{text}");
    Ok(())
}
