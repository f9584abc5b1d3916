//! `clearance init`: create the data directory without serving.

use crate::config::{self, ServerArgs, ServerConfig};
use crate::output::Failure;

/// Create the data directory, signing key, database and first admin key, then exit.
/// Running it again changes nothing.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let config = ServerConfig::resolve(&args.server, None)?;
    let opened = config::open(&config, &args.server, config.issuer("http", None)).await?;
    if opened.bootstrap_key_ignored {
        config::warn_ignored_bootstrap_key(&config.data_dir);
    }
    match &opened.new_admin_key {
        Some(key) => config::print_new_admin_key(key, &config.data_dir),
        None if opened.key_created => println!("Initialized {}.", config.data_dir.display()),
        None => println!("{} is already initialized; nothing changed.", config.data_dir.display()),
    }
    println!("Signing key id: {}", opened.plane.engine().signer().kid());
    Ok(())
}

/// Issue a new API key to the first admin principal, when every admin key is lost.
///
/// The principal is `admin`, the one the first start created. This works on the data
/// directory (or `--database`) directly, which only someone holding the host can do; with
/// SQLite the server must be stopped, since it holds the data directory's lock. The new
/// key is printed once and recorded in the log (`key_issued`); then list the old ones
/// with `clearance key list admin` and revoke them with `clearance key revoke ID`.
#[derive(Debug, clap::Args)]
pub(crate) struct RecoverArgs {
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) async fn recover(args: RecoverArgs) -> Result<(), Failure> {
    let config = ServerConfig::resolve(&args.server, None)?;
    let db = config.data_dir.join("clearance.db");
    if config.database.is_none() && !db.exists() {
        return Err(Failure::Error(anyhow::anyhow!(
            "no control plane in `{}` (no clearance.db): give the --data-dir `serve` uses",
            config.data_dir.display()
        )));
    }
    let opened = config::open(&config, &args.server, config.issuer("http", None)).await?;
    if let Some(key) = &opened.new_admin_key {
        // An empty control plane: bootstrapping made the first admin key.
        config::print_new_admin_key(key, &config.data_dir);
        return Ok(());
    }
    let issued = opened
        .plane
        .recover_admin_key()
        .await
        .map_err(|e| Failure::Error(anyhow::anyhow!("{e}")))?;
    println!(
        "New API key {} for principal `{}` (shown once; store it now):",
        issued.key_id, issued.principal
    );
    println!();
    println!("    {}", issued.key);
    println!();
    Ok(())
}
