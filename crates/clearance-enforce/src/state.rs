//! An enforcement point's own state: the replay cache (which clearances it has already
//! let through) and its view of revocations. Both fail closed.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clearance_model::ClearanceClaims;
use clearance_model::execution::{RevocationKind, RevocationRecord};
use nix::fcntl::{Flock, FlockArg};

use clearance_verify::VerifyError;

/// Consumed `jti`s, kept until their clearance expires, on disk so that a restart does
/// not reopen a replay window. The file is an append-only list of `jti exp` lines,
/// compacted on open, fsynced on every consume, and locked (flock) for as long as the
/// cache is open, so two enforcement points never share one file by accident.
#[derive(Debug)]
pub struct ReplayCache {
    path: PathBuf,
    inner: Mutex<ReplayInner>,
    /// A second descriptor of the same file, so the fsync happens outside the lock and
    /// concurrent consumers share journal commits.
    sync: File,
}

#[derive(Debug)]
struct ReplayInner {
    file: Flock<File>,
    seen: HashMap<String, i64>,
}

/// How long `open` waits for another process to release the cache file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

impl ReplayCache {
    /// Open (creating, mode 0600) the cache at `path`, dropping entries expired at `now`.
    /// Waits up to 10 s for another process holding it.
    pub fn open(path: &Path, now: i64) -> Result<Self, VerifyError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            VerifyError::ReplayCache(format!("{what} `{}`: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err("creating the directory of", &e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err("opening", &e))?;
        let deadline = Instant::now() + LOCK_WAIT;
        let mut locked = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, e)) => return Err(err("locking (is another enforcement point using it?)", &e)),
            }
        };
        let mut seen = HashMap::new();
        for line in BufReader::new(&*locked).lines() {
            let line = line.map_err(|e| err("reading", &e))?;
            let mut parts = line.split(' ');
            match (
                parts.next(),
                parts.next().and_then(|e| e.parse::<i64>().ok()),
                parts.next(),
            ) {
                (Some(jti), Some(exp), None) if !jti.is_empty() => {
                    if exp > now {
                        seen.insert(jti.to_owned(), exp);
                    }
                }
                // A torn last line (crash mid-write) is ignored; anything else means
                // the file is not ours: refuse rather than forget what was consumed.
                _ if line.is_empty() => {}
                _ => {
                    return Err(err(
                        "parsing",
                        &format!("unexpected line `{}`", line.chars().take(80).collect::<String>()),
                    ));
                }
            }
        }
        // Compact: rewrite only what is still live.
        let mut compacted = String::new();
        for (jti, exp) in &seen {
            compacted.push_str(&format!("{jti} {exp}\n"));
        }
        locked.set_len(0).map_err(|e| err("compacting", &e))?;
        locked
            .write_all(compacted.as_bytes())
            .map_err(|e| err("compacting", &e))?;
        locked.sync_data().map_err(|e| err("syncing", &e))?;
        let sync = locked.try_clone().map_err(|e| err("opening", &e))?;
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(ReplayInner { file: locked, seen }),
            sync,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record `jti` as used until `exp`. Fails with `Replayed` if it already was, and with
    /// `ReplayCache` if the record cannot be made durable (then the call must not run).
    pub fn consume(&self, jti: &str, exp: i64, now: i64) -> Result<(), VerifyError> {
        if jti.is_empty() || jti.contains([' ', '\n']) {
            return Err(VerifyError::Malformed("jti is empty or has whitespace".into()));
        }
        let failed = |e: std::io::Error| VerifyError::ReplayCache(format!("writing `{}`: {e}", self.path.display()));
        {
            let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if inner.seen.get(jti).is_some_and(|e| *e > now) {
                return Err(VerifyError::Replayed { jti: jti.to_owned() });
            }
            // Marked consumed before it is durable: if the write or sync fails, the jti
            // stays refused here and this call fails too (closed either way).
            inner.seen.insert(jti.to_owned(), exp);
            if inner.seen.len().is_multiple_of(4096) {
                inner.seen.retain(|_, e| *e > now);
            }
            inner
                .file
                .write_all(format!("{jti} {exp}\n").as_bytes())
                .map_err(failed)?;
        }
        self.sync.sync_data().map_err(failed)
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an enforcement point knows of revocations, fed by the control plane's stream.
/// If it has not heard from the stream within its staleness bound, every check fails
/// with `revocation_view_stale`.
#[derive(Debug)]
pub struct RevocationView {
    bound: Duration,
    inner: Mutex<ViewInner>,
}

#[derive(Debug, Default)]
struct ViewInner {
    executions: HashSet<String>,
    principals: HashSet<String>,
    signing_keys: HashSet<String>,
    /// Quarantined environments, with when: clearances issued before are revoked.
    environments: HashMap<String, i64>,
    seq: u64,
    fresh_at: Option<Instant>,
}

impl RevocationView {
    /// An empty view that is stale until the first heartbeat.
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last sequence number applied: resume the stream after it.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    pub fn apply(&self, r: &RevocationRecord) {
        let mut v = self.lock();
        let set = match r.kind {
            RevocationKind::Execution => &mut v.executions,
            RevocationKind::Principal => &mut v.principals,
            RevocationKind::SigningKey => &mut v.signing_keys,
            RevocationKind::Environment => {
                let at = v.environments.entry(r.id.clone()).or_insert(r.time);
                *at = (*at).max(r.time);
                v.seq = v.seq.max(r.seq);
                return;
            }
        };
        set.insert(r.id.clone());
        v.seq = v.seq.max(r.seq);
    }

    /// The control plane confirmed that everything up to `latest` has been delivered.
    pub fn heard(&self, latest: u64) {
        let mut v = self.lock();
        if v.seq >= latest {
            v.fresh_at = Some(Instant::now());
        }
    }

    /// How old the view is; `None` if it has never been current.
    pub fn age(&self) -> Option<Duration> {
        self.lock().fresh_at.map(|t| t.elapsed())
    }

    /// Fails if the view is stale or the clearance, its parent, its principal or its
    /// signing key is revoked.
    pub fn check(&self, claims: &ClearanceClaims, kid: &str) -> Result<(), VerifyError> {
        let v = self.lock();
        let age = v.fresh_at.map(|t| t.elapsed());
        if age.is_none_or(|a| a > self.bound) {
            return Err(VerifyError::RevocationViewStale {
                age_seconds: age.map_or(u64::MAX, |a| a.as_secs()),
                bound_seconds: self.bound.as_secs(),
            });
        }
        drop(v);
        match self.revoked(claims, kid) {
            Some(why) => Err(VerifyError::Revoked(why)),
            None => Ok(()),
        }
    }

    /// Why the clearance is revoked by the records received so far, however old the view
    /// is: for work already running, which stops on what is known and leaves what is not
    /// to its lease renewal.
    pub fn revoked(&self, claims: &ClearanceClaims, kid: &str) -> Option<String> {
        let v = self.lock();
        if v.executions.contains(claims.jti.as_str()) {
            return Some(format!("execution `{}` was revoked", claims.jti));
        }
        if let Some(p) = claims.par.as_ref().filter(|p| v.executions.contains(p.as_str())) {
            return Some(format!("parent execution `{p}` was revoked"));
        }
        if v.principals.contains(&claims.sub) {
            return Some(format!("principal `{}` was revoked", claims.sub));
        }
        if let Some(env) = claims.aud.as_ref()
            && v.environments.get(env).is_some_and(|at| claims.iat <= *at)
        {
            return Some(format!("environment `{env}` was quarantined"));
        }
        if v.signing_keys.contains(kid) {
            return Some(format!("signing key `{kid}` was revoked"));
        }
        None
    }
}
