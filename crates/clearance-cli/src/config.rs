//! Server configuration: flags and environment variables first, then the config file,
//! then defaults that need no configuration at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use clearance_artifact::ClearanceSigner;
use clearance_core::{ApiKey, ControlPlane, DecisionEngine, EngineConfig, Store, SystemClock};
use clearance_model::limits::{DEFAULT_MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS};
use clearance_store::{PgOptions, PgStore, SqliteStore, StoreOptions};
use serde::Deserialize;

pub(crate) const DEFAULT_DATA_DIR: &str = "./clearance-data";
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
const KEY_FILE: &str = "signing-key.pem";
/// The public keys the signing key replaced, with how long each stays published.
const RETIRED_KEYS_FILE: &str = "retired-signing-keys.json";
pub(crate) const LOG_KEY_FILE: &str = "log-key.pem";
const DB_FILE: &str = "clearance.db";
/// Held locked by the process that uses the data directory.
const LOCK_FILE: &str = "lock";

/// Options shared by `serve` and `init`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// Data directory: signing key and database. Created on first start.
    #[arg(long, env = "CLEARANCE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (keys: data_dir, database, database_schema, listen, origin,
    /// default_ttl_seconds, max_ttl_seconds,
    /// lease_seconds, max_lineage_depth, require_environment, attestation_freshness_seconds,
    /// challenge_ttl_seconds, log_origin, checkpoint_interval_ms, log_max_batch).
    #[arg(long, env = "CLEARANCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The control plane's identity, the `iss` of every clearance [default: http://LISTEN].
    #[arg(long, env = "CLEARANCE_ORIGIN")]
    pub origin: Option<String>,
    /// Keep state in this PostgreSQL database instead of the data directory's SQLite file
    /// (`postgres://user@host:5432/db`). Any number of nodes may share it; each needs the
    /// same signing and log keys (copy `signing-key.pem` and `log-key.pem` into every
    /// node's data directory) and the same --origin.
    #[arg(long, env = "CLEARANCE_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// With --database: keep the tables in this schema (created if missing) rather than
    /// the connection's default one.
    #[arg(long, env = "CLEARANCE_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Use this key as the first admin key instead of generating one (for automation).
    /// Must look like `clr_` followed by at least 22 base64url characters.
    #[arg(long, env = "CLEARANCE_BOOTSTRAP_ADMIN_KEY", hide_env_values = true)]
    pub bootstrap_admin_key: Option<String>,
    /// Lease, in seconds, an execution gets on start and each renewal; an executor that
    /// cannot renew within it must stop [default: 30].
    #[arg(long, env = "CLEARANCE_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Whether every authorize request must name a registered, attested environment
    /// [default: true]. `false` lets requests without one through stage 5 unbound.
    #[arg(long, env = "CLEARANCE_REQUIRE_ENVIRONMENT", value_name = "BOOL")]
    pub require_environment: Option<bool>,
    /// How long an accepted attestation keeps an environment fresh [default: 300].
    #[arg(long, env = "CLEARANCE_ATTESTATION_FRESHNESS_SECONDS")]
    pub attestation_freshness_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    database_schema: Option<String>,
    listen: Option<String>,
    origin: Option<String>,
    default_ttl_seconds: Option<u64>,
    max_ttl_seconds: Option<u64>,
    lease_seconds: Option<u64>,
    max_lineage_depth: Option<u32>,
    require_environment: Option<bool>,
    attestation_freshness_seconds: Option<u64>,
    challenge_ttl_seconds: Option<u64>,
    log_origin: Option<String>,
    checkpoint_interval_ms: Option<u64>,
    log_max_batch: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub data_dir: PathBuf,
    /// PostgreSQL URL; `None` is the data directory's SQLite file.
    pub database: Option<String>,
    pub database_schema: Option<String>,
    pub listen: String,
    pub origin: Option<String>,
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    /// Lease granted on start and on each renewal.
    pub lease_seconds: u64,
    /// Deepest lineage (a root is depth 0).
    pub max_lineage_depth: u32,
    pub require_environment: bool,
    pub attestation_freshness_seconds: u64,
    pub challenge_ttl_seconds: u64,
    /// The log's origin line, used on first start only (then fixed in the database).
    pub log_origin: Option<String>,
    /// How often a checkpoint is signed when the log has grown.
    pub checkpoint_interval: std::time::Duration,
    /// Most decisions sharing one log commit (1 turns group commit off, for comparison).
    pub log_max_batch: usize,
}

impl ServerConfig {
    pub fn resolve(args: &ServerArgs, listen_flag: Option<&str>) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config `{}`", path.display()))?;
                toml::from_str::<FileConfig>(&text).with_context(|| format!("parsing config `{}`", path.display()))?
            }
            None => FileConfig::default(),
        };
        let default_ttl_seconds = file.default_ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        let max_ttl_seconds = file.max_ttl_seconds.unwrap_or(DEFAULT_MAX_TTL_SECONDS);
        anyhow::ensure!(
            (1..=max_ttl_seconds).contains(&default_ttl_seconds),
            "default_ttl_seconds ({default_ttl_seconds}) must be between 1 and max_ttl_seconds ({max_ttl_seconds})"
        );
        let lease_seconds = args
            .lease_seconds
            .or(file.lease_seconds)
            .unwrap_or(clearance_model::execution::DEFAULT_LEASE_SECONDS);
        anyhow::ensure!(
            (1..=3600).contains(&lease_seconds),
            "lease_seconds ({lease_seconds}) must be between 1 and 3600"
        );
        let max_lineage_depth = file
            .max_lineage_depth
            .unwrap_or(clearance_model::execution::DEFAULT_MAX_LINEAGE_DEPTH);
        anyhow::ensure!(
            (1..=64).contains(&max_lineage_depth),
            "max_lineage_depth ({max_lineage_depth}) must be between 1 and 64"
        );
        let attestation_freshness_seconds = args
            .attestation_freshness_seconds
            .or(file.attestation_freshness_seconds)
            .unwrap_or(clearance_model::environment::DEFAULT_ATTESTATION_FRESHNESS_SECONDS);
        anyhow::ensure!(
            (1..=86_400).contains(&attestation_freshness_seconds),
            "attestation_freshness_seconds ({attestation_freshness_seconds}) must be between 1 and 86400"
        );
        let database = args.database.clone().or(file.database);
        let origin = args.origin.clone().or(file.origin);
        anyhow::ensure!(
            database.is_none() || origin.is_some(),
            "with --database, give --origin (or `origin` in the config file): every node of a cluster signs \
             clearances as the same issuer, such as the URL clients reach the cluster at"
        );
        Ok(Self {
            database,
            database_schema: args.database_schema.clone().or(file.database_schema),
            lease_seconds,
            max_lineage_depth,
            require_environment: args.require_environment.or(file.require_environment).unwrap_or(true),
            attestation_freshness_seconds,
            challenge_ttl_seconds: file
                .challenge_ttl_seconds
                .unwrap_or(clearance_model::environment::CHALLENGE_TTL_SECONDS)
                .clamp(1, 3600),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: listen_flag
                .map(str::to_owned)
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            origin,
            default_ttl_seconds,
            max_ttl_seconds,
            log_origin: file.log_origin,
            checkpoint_interval: std::time::Duration::from_millis(file.checkpoint_interval_ms.unwrap_or(1000).max(10)),
            log_max_batch: file
                .log_max_batch
                .unwrap_or(StoreOptions::default().max_batch)
                .clamp(1, 4096),
        })
    }

    /// The issuer for a server bound to `bound`.
    pub fn issuer(&self, scheme: &str, bound: Option<SocketAddr>) -> String {
        match (&self.origin, bound) {
            (Some(o), _) => o.trim_end_matches('/').to_owned(),
            (None, Some(addr)) => format!("{scheme}://{addr}"),
            (None, None) => format!("{scheme}://{}", self.listen),
        }
    }
}

/// Everything `serve` and `init` open in the data directory.
pub(crate) struct Opened {
    pub plane: ControlPlane,
    pub new_admin_key: Option<ApiKey>,
    pub key_created: bool,
    /// A --bootstrap-admin-key was given, but principals existed and it is not one of
    /// their keys: it was not made an admin key.
    pub bootstrap_key_ignored: bool,
    /// Held for as long as the data directory is in use.
    pub lock: DataDirLock,
}

/// An exclusive lock on a data directory (`<dir>/lock`, an advisory `flock`): two
/// processes writing one SQLite log, or both signing with one key, would each believe
/// it owns the log. The kernel releases it when the process exits, however it exits.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    /// The lock lives as long as this open file.
    _file: std::fs::File,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening `{}`", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
                "the data directory `{}` is in use by another clearance process (a running `serve`?): \
                 stop it first, or give this one its own --data-dir",
                dir.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking `{}`", path.display())),
        }
    }
}

pub(crate) async fn open(config: &ServerConfig, args: &ServerArgs, issuer: String) -> anyhow::Result<Opened> {
    let supplied = args
        .bootstrap_admin_key
        .as_deref()
        .map(ApiKey::parse)
        .transpose()
        .map_err(|_| {
            anyhow::anyhow!("the bootstrap admin key must be `clr_` followed by at least 22 base64url characters")
        })?;
    create_private_dir(&config.data_dir)?;
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let (signer, key_created) = ClearanceSigner::load_or_create(&config.data_dir.join(KEY_FILE))?;
    // The log signs checkpoints with its own key, published as a note verifier key.
    let (log_key, _) = clearance_artifact::load_or_create_key(&config.data_dir.join(LOG_KEY_FILE))?;
    let default_origin = config.log_origin.clone().unwrap_or_else(|| default_log_origin(&issuer));
    let options = StoreOptions {
        max_batch: config.log_max_batch,
        ..StoreOptions::default()
    };
    let store: Arc<dyn Store> = match &config.database {
        Some(url) => {
            let pg = PgOptions {
                store: options,
                schema: config.database_schema.clone(),
            };
            Arc::new(PgStore::connect(url, pg).await?)
        }
        None => Arc::new(SqliteStore::open(&config.data_dir.join(DB_FILE), options).await?),
    };
    if config.database.is_some() {
        same_as_the_cluster(store.as_ref(), &signer, &log_key, &issuer).await?;
    }
    let engine = DecisionEngine::new(
        signer,
        EngineConfig {
            issuer,
            default_ttl_seconds: config.default_ttl_seconds,
            max_ttl_seconds: config.max_ttl_seconds,
            max_lineage_depth: config.max_lineage_depth,
            lease_seconds: config.lease_seconds,
            require_environment: config.require_environment,
            attestation_freshness_seconds: config.attestation_freshness_seconds,
            challenge_ttl_seconds: config.challenge_ttl_seconds,
        },
    );
    let plane = ControlPlane::new(store, engine, log_key, &default_origin, Arc::new(SystemClock))
        .await?
        .with_signing_key_store(
            load_retired_keys(&config.data_dir)?,
            Arc::new(KeyFiles {
                dir: config.data_dir.clone(),
            }),
        );
    let given = supplied.is_some();
    let new_admin_key = plane.bootstrap(supplied).await?;
    let bootstrap_key_ignored = match args.bootstrap_admin_key.as_deref().map(ApiKey::parse) {
        Some(Ok(key)) if given => !plane.knows_key(&key).await?,
        _ => false,
    };
    Ok(Opened {
        plane,
        new_admin_key,
        key_created,
        bootstrap_key_ignored,
        lock,
    })
}

/// The signing key and the keys it replaced, as files in the data directory.
#[derive(Debug)]
struct KeyFiles {
    dir: PathBuf,
}

impl clearance_core::SigningKeyStore for KeyFiles {
    fn save(&self, next: &ClearanceSigner, retired: &[clearance_core::RetiredKey]) -> Result<(), String> {
        // The list first: a crash before the key's rename leaves the current key listed as
        // retired too, which loading drops. Each write is atomic (temporary file, rename).
        let path = self.dir.join(RETIRED_KEYS_FILE);
        let text = serde_json::to_vec_pretty(retired).map_err(|e| e.to_string())?;
        clearance_artifact::replace_private_file(&path, &text)
            .map_err(|e| format!("writing `{}`: {e}", path.display()))?;
        next.replace(&self.dir.join(KEY_FILE)).map_err(|e| e.to_string())
    }
}

/// The keys the signing key replaced (none before the first rotation).
fn load_retired_keys(dir: &Path) -> anyhow::Result<Vec<clearance_core::RetiredKey>> {
    let path = dir.join(RETIRED_KEYS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing `{}`", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading `{}`", path.display())),
    }
}

/// Nodes sharing a database must sign as one: the first node fixes the signing key, the
/// log key and the issuer in the database; a node with others refuses to start.
async fn same_as_the_cluster(
    store: &dyn Store,
    signer: &ClearanceSigner,
    log_key: &clearance_artifact::SigningKey,
    issuer: &str,
) -> anyhow::Result<()> {
    let log_public = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        log_key.verifying_key().as_bytes(),
    );
    let checks = [
        ("signing_kid", signer.kid().to_owned(), "signing key (signing-key.pem)"),
        ("log_public_key", log_public, "log key (log-key.pem)"),
        ("issuer", issuer.to_owned(), "origin (--origin)"),
    ];
    for (setting, mine, what) in checks {
        let cluster = store.meta_or_init(setting, &mine).await?;
        anyhow::ensure!(
            cluster == mine,
            "this node's {what} differs from the one the other nodes of this database use \
             (`{mine}` here, `{cluster}` there): every node needs the same keys and origin; copy \
             signing-key.pem and log-key.pem from an existing node's data directory"
        );
    }
    Ok(())
}

/// `http://host:port/` becomes `host:port/log`: a schema-less URL, as the C2SP
/// checkpoint spec recommends.
fn default_log_origin(issuer: &str) -> String {
    let bare = issuer
        .split_once("://")
        .map_or(issuer, |(_, rest)| rest)
        .trim_end_matches('/');
    format!("{bare}/log")
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory `{}`", dir.display()))?;
    }
    Ok(())
}

/// Say so when --bootstrap-admin-key did nothing, and how to get back in.
pub(crate) fn warn_ignored_bootstrap_key(data_dir: &Path) {
    eprintln!(
        "warning: --bootstrap-admin-key (CLEARANCE_BOOTSTRAP_ADMIN_KEY) is ignored: `{}` already has principals, \
         and it only applies to a new control plane. Lost every admin key? Stop the server and run \
         `clearance recover-admin --data-dir {}`.",
        data_dir.display(),
        data_dir.display()
    );
}

pub(crate) fn print_new_admin_key(key: &ApiKey, data_dir: &Path) {
    println!("Created a new control plane in {}.", data_dir.display());
    println!("First admin API key (shown once; store it now):");
    println!();
    println!("    {}", key.expose());
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/clearance.toml");

    /// `examples/clearance.toml` names every key the parser knows (the commented ones
    /// too: uncommented, they parse), and as shipped it is a valid configuration.
    #[test]
    fn the_example_configuration_has_every_key_and_parses() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let every: FileConfig = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}"));
        // Exhaustive: a new key fails to compile here until the example has it.
        let FileConfig {
            data_dir,
            database,
            database_schema,
            listen,
            origin,
            default_ttl_seconds,
            max_ttl_seconds,
            lease_seconds,
            max_lineage_depth,
            require_environment,
            attestation_freshness_seconds,
            challenge_ttl_seconds,
            log_origin,
            checkpoint_interval_ms,
            log_max_batch,
        } = every;
        let present = [
            ("data_dir", data_dir.is_some()),
            ("database", database.is_some()),
            ("database_schema", database_schema.is_some()),
            ("listen", listen.is_some()),
            ("origin", origin.is_some()),
            ("default_ttl_seconds", default_ttl_seconds.is_some()),
            ("max_ttl_seconds", max_ttl_seconds.is_some()),
            ("lease_seconds", lease_seconds.is_some()),
            ("max_lineage_depth", max_lineage_depth.is_some()),
            ("require_environment", require_environment.is_some()),
            ("attestation_freshness_seconds", attestation_freshness_seconds.is_some()),
            ("challenge_ttl_seconds", challenge_ttl_seconds.is_some()),
            ("log_origin", log_origin.is_some()),
            ("checkpoint_interval_ms", checkpoint_interval_ms.is_some()),
            ("log_max_batch", log_max_batch.is_some()),
        ];
        let missing: Vec<&str> = present.iter().filter(|(_, p)| !p).map(|(k, _)| *k).collect();
        assert!(missing.is_empty(), "examples/clearance.toml lacks {missing:?}");

        // As shipped: the defaults, SQLite in ./clearance-data.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clearance.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let args = ServerArgs {
            data_dir: None,
            config: Some(path),
            origin: None,
            database: None,
            database_schema: None,
            bootstrap_admin_key: None,
            lease_seconds: None,
            require_environment: None,
            attestation_freshness_seconds: None,
        };
        let config = ServerConfig::resolve(&args, None).unwrap();
        assert_eq!(config.database, None);
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(
            (config.default_ttl_seconds, config.max_ttl_seconds),
            (DEFAULT_TTL_SECONDS, DEFAULT_MAX_TTL_SECONDS)
        );
        assert_eq!(config.log_max_batch, StoreOptions::default().max_batch);
    }
}
