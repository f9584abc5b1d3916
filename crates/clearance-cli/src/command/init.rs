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
    match &opened.new_admin_key {
        Some(key) => config::print_new_admin_key(key, &config.data_dir),
        None if opened.key_created => println!("Initialized {}.", config.data_dir.display()),
        None => println!("{} is already initialized; nothing changed.", config.data_dir.display()),
    }
    println!("Signing key id: {}", opened.plane.engine().signer().kid());
    Ok(())
}
