//! `clearance exec`: run one command under a clearance.

use std::path::PathBuf;

use clearance_enforce::exec::{Exec, ExecOutcome, ExecRequest, default_arguments, exit, program_arguments};
use clearance_model::ResourceRef;

use crate::command::authorize::{parse_object, parse_resource};
use crate::command::enforcer::{Enforcement, EnforcerArgs, Revocations, default_state_file};
use crate::output::Failure;

const AFTER_HELP: &str = "\
The command runs only after its clearance verified here and the control plane started
the execution; it runs in its own process group, which is killed if a lease renewal is
refused or the control plane cannot be reached before the lease ends. Its stdin, stdout,
stderr and exit code pass through untouched (stdout is also hashed for the record).

Exit codes (the command's own code otherwise; 128+N if it died of signal N):
  120  denied by the control plane: nothing ran
  121  clearance refused (does not match, replayed, revoked, start refused): nothing ran
  122  control plane unavailable: nothing ran
  123  stopped while running: revoked, or the lease could not be renewed
  125  Clearance's own error (bad flags, unreadable files)
  126  the command could not be executed
  127  the command was not found";

/// Run a command only with a clearance for exactly that command line.
///
/// By default asks for action `exec` on resource `Command/<program>`, the program exactly
/// as typed (`clearance exec -- ./deploy.sh staging` asks for `Command::"./deploy.sh"`),
/// with arguments `{"argv": ["./deploy.sh", "staging"], "cwd": "<working directory>"}`, so
/// a policy can constrain the command line (`context.arguments.argv`). With
/// --pin-program the arguments also carry `program` (the file the program resolves to)
/// and `program_sha256` (`sha256:<hex>` of that file). Declare them in the schema
/// (`examples/exec/` has a schema and policies). Once the execution has started, its id
/// is printed on stderr when that is a terminal, and written to --execution-id-file.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The action to ask for.
    #[arg(long, default_value = "exec")]
    action: String,
    /// The resource as TYPE/ID [default: Command/<program>].
    #[arg(long, value_parser = parse_resource)]
    resource: Option<ResourceRef>,
    /// Arguments as a JSON object [default: the argv and working directory].
    #[arg(long)]
    args: Option<String>,
    /// Declared context as a JSON object.
    #[arg(long, default_value = "{}")]
    context: String,
    /// Parent clearance: run as a child execution within its delegable scope.
    #[arg(long, env = "CLEARANCE_PARENT", hide_env_values = true)]
    parent: Option<String>,
    /// Use this clearance instead of asking for one.
    #[arg(long, env = "CLEARANCE_CLEARANCE", hide_env_values = true)]
    clearance: Option<String>,
    /// Wanted clearance lifetime in seconds.
    #[arg(long)]
    ttl: Option<u64>,
    /// Wanted lease in seconds (bounded by the control plane's).
    #[arg(long)]
    lease: Option<u64>,
    /// Also bind the program's resolved path and SHA-256 into the arguments (`program`,
    /// `program_sha256`): the clearance then runs only that exact file, which is checked
    /// again right before it is spawned.
    #[arg(long)]
    pin_program: bool,
    /// Replay cache file [default: $XDG_STATE_HOME/clearance/exec-replay].
    #[arg(long, env = "CLEARANCE_REPLAY_CACHE")]
    replay_cache: Option<PathBuf>,
    /// Write the execution's id to this file once it has started, before the command runs
    /// (for scripts: to revoke it, follow its lineage or export its evidence). On a
    /// terminal the id is also printed on stderr; otherwise stderr carries only the
    /// command's own output and Clearance's refusals.
    #[arg(long, value_name = "FILE")]
    execution_id_file: Option<PathBuf>,
    #[command(flatten)]
    enforcer: EnforcerArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    match prepare_and_run(args).await {
        Ok(outcome) => {
            report(&outcome);
            match outcome.exit_code() {
                0 => Ok(()),
                code => Err(Failure::Exit(code)),
            }
        }
        Err(message) => {
            eprintln!("clearance exec: {message}");
            Err(Failure::Exit(exit::ERROR))
        }
    }
}

async fn prepare_and_run(args: Args) -> Result<ExecOutcome, String> {
    let program = args.command.first().cloned().unwrap_or_default();
    let arguments = match &args.args {
        Some(text) => parse_object("args", text).map_err(|e| format!("{e:#}"))?,
        None => default_arguments(&args.command),
    };
    let arguments = if args.pin_program {
        let (path, digest) = program_arguments(&program)?;
        let mut a = arguments;
        if let Some(o) = a.as_object_mut() {
            o.insert("program".into(), path.into());
            o.insert("program_sha256".into(), digest.to_string().into());
        }
        a
    } else {
        arguments
    };
    let req = ExecRequest {
        command: args.command.clone(),
        action: args.action.clone(),
        resource: args
            .resource
            .clone()
            .unwrap_or_else(|| ResourceRef::new("Command", program)),
        arguments,
        context: parse_object("context", &args.context).map_err(|e| format!("{e:#}"))?,
        environment: args.enforcer.environment.clone(),
        parent: args.parent.clone(),
        ttl_seconds: args.ttl,
        lease_seconds: args.lease,
        clearance: args.clearance.clone(),
    };
    let agent = args.enforcer.agent().map_err(describe)?;
    let path = args
        .replay_cache
        .clone()
        .unwrap_or_else(|| default_state_file("exec-replay"));
    let enforcement = match args.enforcement_for(&path).await {
        Ok(e) => e,
        // Without the keys nothing can be verified: that is the control plane being
        // unavailable, and nothing runs.
        Err(Failure::Unavailable(m)) => return Ok(ExecOutcome::Unavailable(m)),
        Err(e) => return Err(describe(e)),
    };
    let exec = Exec {
        agent: agent.as_ref(),
        pipeline: &enforcement.pipeline,
        revocations: enforcement.watch.as_deref(),
        on_start: Some(&|id| announce(id, args.execution_id_file.as_deref())),
    };
    Ok(exec.run(&req).await)
}

impl Args {
    async fn enforcement_for(&self, replay: &std::path::Path) -> Result<Enforcement, Failure> {
        self.enforcer.enforcement(replay, Revocations::Watch).await
    }
}

/// Report a started execution's id: in `file` (replaced whole, so a reader never sees
/// half an id) and, on a terminal, on stderr.
fn announce(id: &clearance_model::ExecutionId, file: Option<&std::path::Path>) {
    if let Some(path) = file {
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            eprintln!(
                "clearance exec: cannot write the execution id to `{}`: {e}",
                path.display()
            );
        }
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("clearance exec: execution {id} started");
    }
}

fn describe(f: Failure) -> String {
    match f {
        Failure::Error(e) => format!("{e:#}"),
        other => format!("{other:?}"),
    }
}

fn report(outcome: &ExecOutcome) {
    match outcome {
        ExecOutcome::Ran {
            stopped: Some(why),
            execution_id,
            ..
        } => {
            eprintln!("clearance exec: stopped execution {execution_id}: {why}");
        }
        ExecOutcome::Ran { .. } => {}
        ExecOutcome::Denied {
            code,
            message,
            execution_id,
        } => {
            let id = execution_id
                .as_ref()
                .map(|i| format!(" (execution {i})"))
                .unwrap_or_default();
            eprintln!("clearance exec: denied: {code}: {message}{id}");
        }
        ExecOutcome::Refused { code, message } => eprintln!("clearance exec: refused: {code}: {message}"),
        ExecOutcome::Unavailable(m) => {
            eprintln!("clearance exec: control plane unavailable, nothing was run: {m}");
        }
        ExecOutcome::SpawnFailed { message, .. } => eprintln!("clearance exec: {message}"),
    }
}
