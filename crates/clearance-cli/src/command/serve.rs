//! `clearance serve`: run the control plane.

use anyhow::Context as _;
use clearance_server::AppState;

use crate::config::{self, ServerArgs, ServerConfig};
use crate::output::Failure;

/// Start the control plane. With no configuration it keeps everything in
/// ./clearance-data (created on first start, with a signing key and a first admin key).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on (use port 0 for any free port; the bound address is printed).
    #[arg(long, env = "CLEARANCE_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    /// Log format on stderr.
    #[arg(long, env = "CLEARANCE_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    init_logging(&args.log_format);
    let config = ServerConfig::resolve(&args.server, args.listen.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", config.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let issuer = config.issuer(Some(bound));
    let opened = config::open(&config, &args.server, issuer.clone()).await?;
    if opened.key_created {
        tracing::info!(data_dir = %config.data_dir.display(), "created a new signing key");
    }
    if let Some(key) = &opened.new_admin_key {
        config::print_new_admin_key(key, &config.data_dir);
    }
    let kid = opened.plane.engine().signer().kid().to_owned();
    let state = AppState::new(opened.plane);
    clearance_server::spawn_checkpointer(state.clone(), config.checkpoint_interval);
    clearance_server::spawn_shared_state_follower(state.clone());
    let storage = match &config.database {
        Some(_) => "postgresql",
        None => "sqlite",
    };
    tracing::info!(%issuer, %kid, storage, data_dir = %config.data_dir.display(), "control plane ready");
    // A stable line for people and scripts (tests read the port from it).
    eprintln!("clearance: listening on http://{bound}");
    clearance_server::serve(listener, state, shutdown())
        .await
        .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log line that cannot be written is lost, never a failed request: by default the
    // subscriber reports its own write errors with `eprintln!`, which panics when stderr
    // is gone (a closed pipe, a full disk) and took the request's connection with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
