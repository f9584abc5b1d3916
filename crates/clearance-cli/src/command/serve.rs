//! `clearance serve`: run the control plane.

use std::time::Duration;

use anyhow::Context as _;
use clearance_server::AppState;
use clearance_server::listen::{ConnectionLimits, Listening};

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
    #[command(flatten)]
    listening: ListenArgs,
}

/// How the control plane listens: TLS and connection limits.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ListenArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "CLEARANCE_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CLEARANCE_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,
    /// Open connections the server keeps at most; more are closed as they arrive.
    #[arg(long, env = "CLEARANCE_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Open connections one client IP address may hold at most.
    #[arg(long, env = "CLEARANCE_MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = ConnectionLimits::default().max_per_address,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_address: u32,
    /// Seconds a client gets to send a whole request head (and finish its TLS handshake)
    /// before its connection is closed; a kept-alive connection gets as long for its next
    /// request. Keep it above 5: Clearance's own clients reuse a connection idle for up to
    /// 5 s.
    #[arg(long, env = "CLEARANCE_HEADER_TIMEOUT", value_name = "SECONDS",
          default_value_t = ConnectionLimits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a connection may stay with nothing sent either way, during a request or a
    /// stream, before it is closed.
    #[arg(long, env = "CLEARANCE_IDLE_TIMEOUT", value_name = "SECONDS",
          default_value_t = ConnectionLimits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout: u64,
}

impl ListenArgs {
    pub(crate) fn listening(&self) -> anyhow::Result<Listening> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(std::sync::Arc::new(
                clearance_server::listen::tls_config(cert, key).map_err(anyhow::Error::msg)?,
            )),
            _ => None,
        };
        Ok(Listening {
            limits: ConnectionLimits {
                max_connections: self.max_connections,
                max_per_address: self.max_connections_per_address,
                header_timeout: Duration::from_secs(self.header_timeout),
                idle_timeout: Duration::from_secs(self.idle_timeout),
            },
            tls,
        })
    }
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    init_logging(&args.log_format);
    let config = ServerConfig::resolve(&args.server, args.listen.as_deref())?;
    let listening = args.listening.listening()?;
    let scheme = if listening.tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", config.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let issuer = config.issuer(scheme, Some(bound));
    let opened = config::open(&config, &args.server, issuer.clone()).await?;
    let _lock = opened.lock;
    if opened.bootstrap_key_ignored {
        config::warn_ignored_bootstrap_key(&config.data_dir);
    }
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
    eprintln!("clearance: listening on {scheme}://{bound}");
    let watched = state.clone();
    tokio::select! {
        () = clearance_server::serve(listener, state, listening, shutdown()) => {}
        () = writer_lost(&watched) => {
            return Err(Failure::Error(anyhow::anyhow!(
                "the log writer stopped, so nothing can be decided: exiting for a supervisor to restart the server"
            )));
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once the store's log writer has stopped (it survives a failing or panicking
/// batch, so this means its task is gone). `/readyz` answers 503 from that moment.
async fn writer_lost(state: &AppState) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if state.plane().writer_stopped() {
            return;
        }
    }
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
