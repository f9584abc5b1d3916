//! An enforcement point's own state: the replay cache (which clearances it has already
//! let through) and its view of revocations. Both fail closed.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clearance_model::ClearanceClaims;
use clearance_model::execution::{RevocationKind, RevocationRecord};
use nix::fcntl::{Flock, FlockArg};

use clearance_verify::VerifyError;

/// Consumed `jti`s, kept until their clearance expires, on disk so that a restart does
/// not reopen a replay window, and locked (flock) for as long as the cache is open, so two
/// enforcement points never share one file by accident.
///
/// Durability without an fsync per admission. A record is written to the file (one
/// `write`) before the call it admits runs, so it survives the enforcement point's own
/// crash: the kernel holds it. Only a crash of the machine can lose it, and that changes
/// the kernel's boot id. The file's header names the boot that wrote it; when the cache
/// is opened under another boot and the file was not closed cleanly (synced, then marked
/// `closed`), records may be missing, so the cache raises its *floor* to the time of
/// opening: any clearance that may have been issued before it is refused
/// (`replay_cache_unavailable`), since the cache cannot prove it unused. Clearances live
/// minutes, so that costs one re-authorization after a machine crash, never a replay.
/// Where the kernel has no boot id, every record is synced before the call runs.
///
/// Format: a header line `clearance-replay 2 boot=<id> floor=<unix seconds>`, then one
/// `<jti> <exp>` line per record, then `closed` after a clean close. A file of records
/// with no header (version 1, synced record by record) is read as complete. The file is
/// compacted on open into a new file that replaces it atomically.
#[derive(Debug)]
pub struct ReplayCache {
    path: PathBuf,
    inner: Mutex<ReplayInner>,
    /// A second descriptor of the same file, so that an fsync (when there is no boot id)
    /// happens outside the lock and concurrent consumers share journal commits.
    sync: File,
    /// Clearances that may have been issued before this are refused.
    floor: i64,
    /// `None`: no boot id, so every record is synced.
    boot: Option<String>,
}

#[derive(Debug)]
struct ReplayInner {
    file: Flock<File>,
    seen: HashMap<String, i64>,
}

/// How long `open` waits for another process to release the cache file.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const HEADER: &str = "clearance-replay 2";
const CLOSED: &str = "closed";
/// The header's boot where the kernel has none: every record is synced.
const NO_BOOT_ID: &str = "none";

/// This boot of the kernel, if it says.
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_owned())
}

/// What an existing file holds.
#[derive(Debug, Default)]
struct Contents {
    /// The boot that wrote it, from its header (`None`: no header, version 1).
    boot: Option<String>,
    floor: i64,
    /// The last line is `closed`: everything before it was synced.
    closed: bool,
    records: Vec<(String, i64)>,
    /// The first line past the header that is not a record.
    first_damaged: Option<String>,
}

fn parse(text: &str) -> Result<Contents, String> {
    let mut c = Contents::default();
    // A last line without its newline, after complete ones, is a write that failed part
    // way (a full disk): its consume failed too, so nothing was admitted on it. (A file
    // with no complete line at all is read as it is: it may not be ours.)
    let text = text.rfind('\n').and_then(|end| text.get(..=end)).unwrap_or(text);
    let mut lines = text.lines().peekable();
    if let Some(first) = lines.peek().filter(|l| l.starts_with("clearance-replay ")) {
        let mut parts = first.split(' ').skip(2);
        let (Some(boot), Some(floor), None) = (
            parts.next().and_then(|p| p.strip_prefix("boot=")),
            parts
                .next()
                .and_then(|p| p.strip_prefix("floor="))
                .and_then(|f| f.parse::<i64>().ok()),
            parts.next(),
        ) else {
            return Err(format!(
                "unknown header `{}`",
                first.chars().take(80).collect::<String>()
            ));
        };
        if !first.starts_with(HEADER) {
            return Err(format!(
                "unknown version `{}`",
                first.chars().take(80).collect::<String>()
            ));
        }
        c.boot = Some(boot.to_owned());
        c.floor = floor;
        lines.next();
    }
    for line in lines {
        c.closed = false;
        if line == CLOSED {
            c.closed = true;
            continue;
        }
        let mut parts = line.split(' ');
        match (
            parts.next(),
            parts.next().and_then(|e| e.parse::<i64>().ok()),
            parts.next(),
        ) {
            (Some(jti), Some(exp), None) if !jti.is_empty() => c.records.push((jti.to_owned(), exp)),
            _ if line.is_empty() => {}
            _ => {
                c.first_damaged
                    .get_or_insert_with(|| line.chars().take(80).collect::<String>());
            }
        }
    }
    Ok(c)
}

impl ReplayCache {
    /// Open (creating, mode 0600) the cache at `path`, dropping entries expired at `now`.
    /// Waits up to 10 s for another process holding it.
    pub fn open(path: &Path, now: i64) -> Result<Self, VerifyError> {
        Self::open_in_boot(path, now, boot_id())
    }

    /// `open`, as if the kernel's boot id were `boot`.
    pub(crate) fn open_in_boot(path: &Path, now: i64, boot: Option<String>) -> Result<Self, VerifyError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            VerifyError::ReplayCache(format!("{what} `{}`: {e}", path.display()))
        };
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| err("creating the directory of", &e))?;
                dir.to_owned()
            }
            None => PathBuf::from("."),
        };
        let mut locked = lock(path).map_err(|e| err("locking (is another enforcement point using it?)", &e))?;
        let mut text = String::new();
        locked.read_to_string(&mut text).map_err(|e| err("reading", &e))?;
        let old = parse(&text).map_err(|e| err("parsing", &e))?;
        // Records written under this boot, or synced one by one (version 1, or no boot id:
        // `none`), are all there; otherwise only a clean close proves it.
        let synced = matches!(old.boot.as_deref(), None | Some(NO_BOOT_ID));
        let complete = synced || old.closed || old.boot == boot;
        // A line that is not a record means the file is not ours: refuse rather than
        // forget what was consumed. (Each record is one `write`, so a crash of the process
        // does not tear it.) After a machine crash the tail may be garbage, and the floor
        // covers whatever it held.
        if complete && let Some(line) = &old.first_damaged {
            return Err(err("parsing", &format!("unexpected line `{line}`")));
        }
        let floor = if complete { old.floor } else { old.floor.max(now) };
        let seen: HashMap<String, i64> = old.records.into_iter().filter(|(_, exp)| *exp > now).collect();

        // Compact into a new file, locked before it takes the old one's place.
        let mut compacted = format!(
            "{HEADER} boot={} floor={floor}\n",
            boot.as_deref().unwrap_or(NO_BOOT_ID)
        );
        for (jti, exp) in &seen {
            compacted.push_str(&format!("{jti} {exp}\n"));
        }
        // Named after the whole file name, so caches side by side never share it; only the
        // holder of the lock on `path` touches it.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".compacting");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let fresh = create(&tmp).map_err(|e| err("compacting into", &e))?;
        let mut fresh = Flock::lock(fresh, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| err("locking the compacted copy of", &e))?;
        fresh
            .write_all(compacted.as_bytes())
            .and_then(|()| fresh.sync_data())
            .map_err(|e| err("compacting", &e))?;
        std::fs::rename(&tmp, path).map_err(|e| err("replacing", &e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("syncing the directory of", &e))?;
        drop(locked);
        let sync = fresh.try_clone().map_err(|e| err("opening", &e))?;
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(ReplayInner { file: fresh, seen }),
            sync,
            floor,
            boot,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clearances that may have been issued before this time are refused: the machine
    /// crashed since records were last synced (0 when it did not).
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// Record `jti` as used until `exp`. Fails with `Replayed` if it already was, and with
    /// `ReplayCache` if the record cannot be made durable or if the clearance may have
    /// been issued (at the earliest, `issued_from`) before the floor. Then the call must
    /// not run.
    pub fn consume(&self, jti: &str, issued_from: i64, exp: i64, now: i64) -> Result<(), VerifyError> {
        if jti.is_empty() || jti.contains([' ', '\n']) || jti == CLOSED {
            return Err(VerifyError::Malformed("jti is empty or has whitespace".into()));
        }
        if issued_from < self.floor {
            return Err(VerifyError::ReplayCache(format!(
                "`{}` may have been used before the machine restarted at {} without syncing the \
                 replay cache `{}`: request a new clearance",
                jti,
                self.floor,
                self.path.display()
            )));
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
        if self.boot.is_none() {
            self.sync.sync_data().map_err(failed)?;
        }
        Ok(())
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

impl Drop for ReplayCache {
    /// A clean close: sync every record, then say so, so that a machine crash after it
    /// does not raise the floor.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.file.sync_data().is_ok() && inner.file.write_all(format!("{CLOSED}\n").as_bytes()).is_ok() {
            let _ = inner.file.sync_data();
        }
    }
}

/// Open (creating) and lock the cache file at `path`, waiting for another holder. The
/// file locked must still be the one at `path`: a holder that compacted it replaced it.
fn lock(path: &Path) -> std::io::Result<Flock<File>> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let mut file = create_or_open(path)?;
        let locked = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, e)) => return Err(e.into()),
            }
        };
        let (held, now_at_path) = (locked.metadata()?, std::fs::metadata(path)?);
        if (held.dev(), held.ino()) == (now_at_path.dev(), now_at_path.ino()) {
            return Ok(locked);
        }
    }
}

fn create_or_open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
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
