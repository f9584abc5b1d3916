//! The `exec` wrapper: run one command under a clearance. It is spawned only after the
//! clearance verified locally and the control plane consumed it; it runs in its own
//! process group, which is killed when a renewal says no or the lease runs out; its exit
//! status, stdout and stderr pass through untouched.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use clearance_model::execution::{CompleteRequest, CompletionStatus, Lease};
use clearance_model::wire::AuthorizeRequest;
use clearance_model::{Digest, ErrorCode, ExecutionId, ResourceRef, Timestamp};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::client::{CallError, ControlPlaneClient};
use crate::pipeline::{Admission, Call, NotAdmitted, Pipeline, authorize};
use crate::state::RevocationView;

/// Exit codes of `clearance exec` when Clearance, not the command, decides. The
/// command's own exit code passes through; a command killed by signal N exits 128+N.
pub mod exit {
    /// The control plane denied the request; nothing ran.
    pub const DENIED: i32 = 120;
    /// The clearance was refused (local verification, replay, revoked, start refused); nothing ran.
    pub const REFUSED: i32 = 121;
    /// The control plane could not be reached or answered nonsense; nothing ran.
    pub const UNAVAILABLE: i32 = 122;
    /// The command was running and was stopped: revoked, or the lease could not be renewed.
    pub const STOPPED: i32 = 123;
    /// Clearance's own error (bad flags, unreadable files).
    pub const ERROR: i32 = 125;
    /// The command exists but could not be executed.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
}

/// What to run and what to ask for.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// argv; the first element is the program.
    pub command: Vec<String>,
    pub action: String,
    pub resource: ResourceRef,
    pub arguments: serde_json::Value,
    pub context: serde_json::Value,
    pub environment: Option<String>,
    pub parent: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub lease_seconds: Option<u64>,
    /// A clearance obtained beforehand; then no authorize call is made.
    pub clearance: Option<String>,
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command ran to its end (or was stopped: `stopped` says why).
    Ran {
        execution_id: ExecutionId,
        code: Option<i32>,
        signal: Option<i32>,
        stopped: Option<String>,
        output_digest: Digest,
    },
    /// The control plane said no; nothing was spawned.
    Denied {
        code: ErrorCode,
        message: String,
        execution_id: Option<ExecutionId>,
    },
    /// The clearance did not pass; nothing was spawned.
    Refused { code: ErrorCode, message: String },
    /// The control plane was unreachable or misbehaved; nothing was spawned.
    Unavailable(String),
    /// The execution was started but the program could not be spawned.
    SpawnFailed { not_found: bool, message: String },
}

impl ExecOutcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Ran { stopped: Some(_), .. } => exit::STOPPED,
            Self::Ran { code: Some(c), .. } => *c,
            Self::Ran { signal: Some(s), .. } => 128 + s,
            Self::Ran { .. } => exit::ERROR,
            Self::Denied { .. } => exit::DENIED,
            Self::Refused { .. } => exit::REFUSED,
            Self::Unavailable(_) => exit::UNAVAILABLE,
            Self::SpawnFailed { not_found: true, .. } => exit::NOT_FOUND,
            Self::SpawnFailed { .. } => exit::NOT_EXECUTABLE,
        }
    }
}

/// The arguments `exec` asks for by default: the argv and the working directory, so
/// policies can constrain the command line.
pub fn default_arguments(command: &[String]) -> serde_json::Value {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    serde_json::json!({ "argv": command, "cwd": cwd })
}

/// The file `program` resolves to: as given if it has a `/`, else the first executable
/// match on `PATH`.
pub fn resolve_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| executable(p))
    })
}

/// `{"program": <resolved path>, "program_sha256": "sha256:..."}` for `--pin-program`: a
/// clearance for these arguments only runs that exact file.
pub fn program_arguments(program: &str) -> Result<(String, Digest), String> {
    let path = resolve_program(program).ok_or_else(|| format!("`{program}` does not resolve to an executable file"))?;
    let bytes = std::fs::read(&path).map_err(|e| format!("reading `{}`: {e}", path.display()))?;
    Ok((path.display().to_string(), Digest::of(&bytes)))
}

/// If the arguments pin the program's digest, check the file `program` resolves to now
/// and return its path (to spawn exactly that file).
fn pinned_program(program: &str, arguments: &serde_json::Value) -> Result<Option<std::path::PathBuf>, ExecOutcome> {
    let Some(want) = arguments.get("program_sha256") else {
        return Ok(None);
    };
    let mismatch = |message: String| ExecOutcome::Refused {
        code: ErrorCode::MeasurementMismatch,
        message,
    };
    let (path, got) = program_arguments(program).map_err(mismatch)?;
    if want.as_str() != Some(got.to_string().as_str()) {
        return Err(mismatch(format!(
            "`{path}` has digest {got}, but the clearance is for {want}"
        )));
    }
    if let Some(named) = arguments.get("program").and_then(serde_json::Value::as_str)
        && named != path
    {
        return Err(mismatch(format!(
            "`{program}` resolves to `{path}`, but the clearance is for `{named}`"
        )));
    }
    Ok(Some(std::path::PathBuf::from(path)))
}

/// How often a running command's clearance is checked against the revocations received.
const REVOCATION_POLL: Duration = Duration::from_millis(50);

/// Grace between SIGTERM and SIGKILL when stopping a command.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Everything `run` talks to.
pub struct Exec<'a> {
    /// Asks for the clearance (not needed with `ExecRequest::clearance`).
    pub agent: Option<&'a ControlPlaneClient>,
    /// Admits, renews and completes the execution.
    pub pipeline: &'a Pipeline,
    /// Revocations as the stream delivers them: a running command whose clearance they
    /// revoke is stopped at once, without waiting for its next renewal (which stays the
    /// fallback when the stream is down).
    pub revocations: Option<&'a RevocationView>,
    /// Told the execution's id once it has started, before the command is spawned (the
    /// `exec` command reports it, so the execution can be revoked or looked up).
    pub on_start: Option<&'a (dyn Fn(&ExecutionId) + Sync)>,
}

impl std::fmt::Debug for Exec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("agent", &self.agent)
            .field("pipeline", &self.pipeline)
            .field("revocations", &self.revocations)
            .field("on_start", &self.on_start.map(|_| "Fn(&ExecutionId)"))
            .finish()
    }
}

impl Exec<'_> {
    pub async fn run(&self, req: &ExecRequest) -> ExecOutcome {
        let Some(program) = req.command.first() else {
            return ExecOutcome::Refused {
                code: ErrorCode::InvalidRequest,
                message: "no command given".into(),
            };
        };
        let token = match (&req.clearance, self.agent) {
            (Some(t), _) => t.clone(),
            (None, Some(agent)) => match authorize(agent, &ask(req)).await {
                Ok(t) => t,
                Err(NotAdmitted::Refused { code, message }) => {
                    return ExecOutcome::Denied {
                        code,
                        message,
                        execution_id: None,
                    };
                }
                Err(refusal) => return refused(refusal),
            },
            (None, None) => {
                return ExecOutcome::Refused {
                    code: ErrorCode::InvalidRequest,
                    message: "no clearance given and no agent key to ask for one (set CLEARANCE_API_KEY to an agent key, or pass --clearance)".into(),
                };
            }
        };
        // A pinned program is checked before the clearance is consumed, and again
        // right before it is spawned.
        if let Err(outcome) = pinned_program(program, &req.arguments) {
            return outcome;
        }
        let call = Call {
            action: &req.action,
            resource: &req.resource,
            arguments: &req.arguments,
        };
        let admission = match self.pipeline.admit(token, call, req.lease_seconds).await {
            Ok(a) => a,
            Err(refusal) => return refused(refusal),
        };
        if let Some(tell) = self.on_start {
            tell(admission.execution_id());
        }
        let exact = match pinned_program(program, &req.arguments) {
            Ok(p) => p,
            Err(outcome) => {
                self.pipeline
                    .complete(admission, report(CompletionStatus::Failed, None, None))
                    .await;
                return outcome;
            }
        };
        let mut child = match spawn(
            &admission,
            exact.as_deref().unwrap_or(std::path::Path::new(program)),
            &req.command[1..],
        ) {
            Ok(c) => c,
            Err(e) => {
                self.pipeline
                    .complete(admission, report(CompletionStatus::Failed, None, None))
                    .await;
                return ExecOutcome::SpawnFailed {
                    not_found: e.kind() == std::io::ErrorKind::NotFound,
                    message: format!("cannot run `{program}`: {e}"),
                };
            }
        };
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        let stdout = child.stdout.take().map(|o| tokio::spawn(pump(o, tokio::io::stdout())));
        let stderr = child.stderr.take().map(|e| tokio::spawn(pump(e, tokio::io::stderr())));

        let (status, stopped) = self.supervise(&mut child, pgid, &admission, req.lease_seconds).await;
        // The execution is over: nothing it started may outlive it in its group.
        if let Some(pg) = pgid {
            let _ = killpg(pg, Signal::SIGKILL);
        }
        let digest = match stdout {
            Some(h) => h.await.ok().and_then(Result::ok).unwrap_or_else(|| Digest::of(b"")),
            None => Digest::of(b""),
        };
        if let Some(h) = stderr {
            let _ = h.await;
        }
        let (code, signal) = match &status {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        let completion = match (&stopped, code) {
            (Some(_), _) => CompletionStatus::Stopped,
            (None, Some(0)) => CompletionStatus::Succeeded,
            (None, _) => CompletionStatus::Failed,
        };
        let execution_id = admission.execution_id().clone();
        self.pipeline
            .complete(admission, report(completion, code, Some(digest)))
            .await;
        ExecOutcome::Ran {
            execution_id,
            code,
            signal,
            stopped,
            output_digest: digest,
        }
    }

    /// Wait for the child while keeping the lease alive. Returns its status and, if it
    /// had to be stopped, why.
    async fn supervise(
        &self,
        child: &mut tokio::process::Child,
        pgid: Option<Pid>,
        admission: &Admission,
        lease_seconds: Option<u64>,
    ) -> (std::io::Result<std::process::ExitStatus>, Option<String>) {
        let (mut deadline, mut period) = local_deadline(admission.lease());
        let mut next_renew = Instant::now() + period / 3;
        let mut watch = tokio::time::interval(REVOCATION_POLL);
        loop {
            tokio::select! {
                status = child.wait() => return (status, None),
                () = tokio::time::sleep_until(next_renew.min(deadline)) => {}
                _ = watch.tick(), if self.revocations.is_some() => {
                    let why = self.revocations.and_then(|v| v.revoked(admission.claims(), admission.kid()));
                    match why {
                        Some(why) => return (stop(child, pgid).await, Some(format!("execution_revoked: {why}"))),
                        None => continue,
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let why = "the lease ran out before it could be renewed".to_owned();
                return (stop(child, pgid).await, Some(why));
            }
            let renewal = tokio::time::timeout(deadline - now, self.pipeline.renew(admission, lease_seconds)).await;
            match renewal {
                Ok(Ok(r)) if r.renewed => {
                    if let Some(l) = &r.lease {
                        (deadline, period) = local_deadline(l);
                    }
                    next_renew = Instant::now() + period / 3;
                }
                Ok(Ok(r)) => {
                    let why = format!(
                        "{}: {}",
                        r.reason.map_or("renewal refused", |r| r.as_str()),
                        r.message.as_deref().unwrap_or("")
                    );
                    return (stop(child, pgid).await, Some(why));
                }
                Ok(Err(CallError::Refused { code, message, .. })) => {
                    return (stop(child, pgid).await, Some(format!("{code}: {message}")));
                }
                // Unreachable or slow: try again soon, until the lease runs out.
                Ok(Err(CallError::Unavailable(m))) => {
                    tracing::warn!(error = %m, "lease renewal failed; retrying");
                    next_renew = Instant::now() + Duration::from_millis(500);
                }
                Err(_) => next_renew = Instant::now(),
            }
        }
    }
}

/// The authorize request an exec makes.
fn ask(req: &ExecRequest) -> AuthorizeRequest {
    AuthorizeRequest {
        action: req.action.clone(),
        resource: req.resource.clone(),
        arguments: req.arguments.clone(),
        context: req.context.clone(),
        environment: req.environment.clone(),
        parent: req.parent.clone(),
        ttl_seconds: req.ttl_seconds,
        delegate: None,
    }
}

/// Nothing ran: how the pipeline's refusal reads as an exec outcome.
fn refused(refusal: NotAdmitted) -> ExecOutcome {
    match refusal {
        NotAdmitted::Denied {
            reasons,
            message,
            execution_id,
            ..
        } => ExecOutcome::Denied {
            code: ErrorCode::of_deny(&reasons),
            message,
            execution_id: Some(execution_id),
        },
        NotAdmitted::Unavailable(m) => ExecOutcome::Unavailable(m),
        r @ (NotAdmitted::Rejected(_) | NotAdmitted::Refused { .. }) => ExecOutcome::Refused {
            code: r.code(),
            message: match r {
                NotAdmitted::Refused { message, .. } => message,
                other => other.to_string(),
            },
        },
    }
}

/// Spawn the command of an admitted execution in its own process group. Taking the
/// admission is the point: nothing is spawned without one.
fn spawn(_admitted: &Admission, program: &std::path::Path, args: &[String]) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

/// The completion report of a run.
fn report(status: CompletionStatus, exit_code: Option<i32>, output_digest: Option<Digest>) -> CompleteRequest {
    CompleteRequest {
        status,
        exit_code,
        output_digest,
    }
}

/// The local instant to stop at, a safety margin before the lease's end, and the lease
/// length (renewals happen every third of it).
fn local_deadline(lease: &Lease) -> (Instant, Duration) {
    let remaining = lease.lease_expires.saturating_sub(Timestamp::now().seconds());
    let remaining = Duration::from_secs(u64::try_from(remaining).unwrap_or(0));
    // Lease ends are whole seconds: keep a margin so the process is gone before it.
    let margin = (remaining / 4).min(Duration::from_secs(1));
    let usable = remaining.saturating_sub(margin).max(Duration::from_millis(200));
    (Instant::now() + usable, usable)
}

/// SIGTERM the process group, SIGKILL it after a grace period, and reap the child.
async fn stop(child: &mut tokio::process::Child, pgid: Option<Pid>) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pg) = pgid {
        let _ = killpg(pg, Signal::SIGTERM);
    }
    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if let Some(pg) = pgid {
                let _ = killpg(pg, Signal::SIGKILL);
            }
            child.kill().await.ok();
            child.wait().await
        }
    }
}

/// Copy everything from `from` to `to` as it arrives, and return the SHA-256 of it.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) -> std::io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out_open = true;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        // If our own output closed, keep draining (and hashing) so the child is not
        // blocked, but stop writing.
        if out_open && (to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err()) {
            out_open = false;
        }
    }
    Ok(Digest::from_bytes(hasher.finalize().into()))
}
