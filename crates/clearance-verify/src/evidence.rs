//! Offline verification of evidence bundles: no network, no database.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clearance_artifact::{Jwks, UnverifiedToken};
use clearance_log::{Checkpoint, NoteVerifier, VerifiedCheckpoint, leaf_hash, verify_consistency, verify_inclusion};
use clearance_model::event::{DecisionEvent, Event};
use clearance_model::wire::{EVIDENCE_FORMAT, EvidenceBundle};
use clearance_model::{Decision, LogIndex, canonical_json};

/// What the auditor trusts, independently of the bundle. Without pinned keys the bundle
/// is only checked against the keys it carries.
#[derive(Debug, Clone, Default)]
pub struct EvidenceTrust {
    /// The log's verifier key, obtained out of band.
    pub log_key: Option<String>,
    /// The control plane's JWKS, obtained out of band.
    pub jwks: Option<Jwks>,
    /// A checkpoint note the auditor saved earlier.
    pub trusted_checkpoint: Option<String>,
}

/// What a bundle was shown to prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceReport {
    pub decision: Decision,
    pub entries: Vec<LogIndex>,
    pub checkpoint_size: u64,
    pub clearance_checked: bool,
    pub keys_pinned: bool,
    pub consistent_with_trusted: Option<u64>,
    /// What happened after the decision, in log order: `started`, `renewed`,
    /// `completed: succeeded (exit 0)`, `revoked: <reason>`.
    pub lifecycle: Vec<Step>,
}

/// One step of an execution's story, as the bundle's entries prove it. Shown (and
/// serialized) as one line: `attested: ENV DIGEST`, `started`, `renewed`,
/// `completed: STATUS (exit N)`, `revoked: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Attested {
        environment: String,
        measurement_digest: clearance_model::Digest,
    },
    Started,
    Renewed,
    Completed {
        status: clearance_model::execution::CompletionStatus,
        exit_code: Option<i32>,
    },
    Revoked {
        reason: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attested {
                environment,
                measurement_digest,
            } => write!(f, "attested: {environment} {measurement_digest}"),
            Self::Started => f.write_str("started"),
            Self::Renewed => f.write_str("renewed"),
            Self::Completed { status, exit_code } => {
                let status = serde_json::to_value(status).ok();
                let status = status.as_ref().and_then(serde_json::Value::as_str).unwrap_or("?");
                write!(f, "completed: {status}")?;
                match exit_code {
                    Some(c) => write!(f, " (exit {c})"),
                    None => Ok(()),
                }
            }
            Self::Revoked { reason } => write!(f, "revoked: {reason}"),
        }
    }
}

impl serde::Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The first check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("not an evidence bundle: {0}")]
    Format(String),
    #[error("log key: {0}")]
    LogKey(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("entry {index}: {reason}")]
    Entry { index: u64, reason: String },
    #[error("entry {index} is not included in the checkpoint: {reason}")]
    Inclusion { index: u64, reason: String },
    #[error("clearance: {0}")]
    Clearance(String),
    #[error("trusted checkpoint: {0}")]
    Consistency(String),
}

impl EvidenceError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Format(_) => "format",
            Self::LogKey(_) => "log_key",
            Self::Checkpoint(_) => "checkpoint",
            Self::Entry { .. } => "entry",
            Self::Inclusion { .. } => "inclusion",
            Self::Clearance(_) => "clearance",
            Self::Consistency(_) => "consistency",
        }
    }
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(s).map_err(|_| "not base64".to_owned())
}

/// Check every signature, digest and proof in `bundle`.
pub fn verify_evidence(bundle: &EvidenceBundle, trust: &EvidenceTrust) -> Result<EvidenceReport, EvidenceError> {
    if bundle.format != EVIDENCE_FORMAT {
        return Err(EvidenceError::Format(format!(
            "format is `{}`, not `{EVIDENCE_FORMAT}`",
            bundle.format
        )));
    }
    let verifier = NoteVerifier::parse(&bundle.log_verifier_key).map_err(|e| EvidenceError::LogKey(e.to_string()))?;
    if let Some(pinned) = &trust.log_key {
        let pinned = NoteVerifier::parse(pinned).map_err(|e| EvidenceError::LogKey(format!("pinned key: {e}")))?;
        if pinned != verifier {
            return Err(EvidenceError::LogKey(
                "the bundle's log key is not the pinned one".into(),
            ));
        }
    }
    let checkpoint =
        Checkpoint::open(&bundle.checkpoint, &verifier).map_err(|e| EvidenceError::Checkpoint(e.to_string()))?;

    // First every entry's form and inclusion; then what each one says.
    let mut events = Vec::with_capacity(bundle.entries.len());
    for e in &bundle.entries {
        let index = e.index.0;
        let bad = |reason: String| EvidenceError::Entry { index, reason };
        let bytes = b64(&e.entry).map_err(bad)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if canonical_json(&value).map_err(|e| bad(e.to_string()))? != bytes {
            return Err(bad("not in RFC 8785 canonical form".into()));
        }
        let event: Event = serde_json::from_value(value).map_err(|e| bad(format!("not a log event: {e}")))?;
        let proof = e
            .proof
            .iter()
            .map(|p| b64(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        verify_inclusion(index, checkpoint.size, &leaf_hash(&bytes), &proof, &checkpoint.root).map_err(|e| {
            EvidenceError::Inclusion {
                index,
                reason: e.to_string(),
            }
        })?;
        events.push((e.index, event));
    }
    if events.windows(2).any(|w| matches!(w, [(a, _), (b, _)] if a >= b)) {
        return Err(EvidenceError::Format("entries are not in log order".into()));
    }
    let mut decisions = events.iter().filter_map(|(i, ev)| match ev {
        Event::Decision(d) if d.execution_id == bundle.execution_id => Some((*i, (**d).clone())),
        _ => None,
    });
    let decision = decisions.next();
    if decisions.next().is_some() {
        return Err(EvidenceError::Format("a second decision for the execution".into()));
    }
    let mut indexes = Vec::new();
    let mut lifecycle = Vec::new();
    let ours = |id: &clearance_model::ExecutionId| id == &bundle.execution_id;
    for (at, event) in events {
        let index = at.0;
        let bad = |reason: String| EvidenceError::Entry { index, reason };
        let Some((d_at, d)) = &decision else {
            return Err(EvidenceError::Format("the bundle has no decision entry".into()));
        };
        if at < *d_at {
            // Only the attestation the decision names may precede it, and it must say
            // what the decision bound.
            match event {
                Event::EnvironmentAttested {
                    environment,
                    measurement_digest,
                    matches,
                    ..
                } if d.attestation == Some(at)
                    && d.environment.as_deref() == Some(environment.as_str())
                    && d.measurements == Some(measurement_digest)
                    && matches =>
                {
                    lifecycle.push(Step::Attested {
                        environment,
                        measurement_digest,
                    });
                }
                _ => return Err(bad("an entry before the decision that is not its attestation".into())),
            }
            indexes.push(at);
            continue;
        }
        match event {
            Event::Decision(_) => {}
            Event::ExecutionStarted { execution_id, .. } if ours(&execution_id) => lifecycle.push(Step::Started),
            Event::ExecutionRenewed { execution_id, .. } if ours(&execution_id) => lifecycle.push(Step::Renewed),
            Event::ExecutionCompleted {
                execution_id,
                status,
                exit_code,
                ..
            } if ours(&execution_id) => lifecycle.push(Step::Completed { status, exit_code }),
            Event::Revocation {
                kind: clearance_model::execution::RevocationKind::Execution,
                id,
                reason,
                ..
            } if id == bundle.execution_id.as_str() => lifecycle.push(Step::Revoked { reason }),
            _ => return Err(bad(format!("not an event of execution `{}`", bundle.execution_id))),
        }
        indexes.push(at);
    }
    if let Some((_, d)) = &decision
        && d.attestation.is_some()
        && !indexes.iter().any(|i| Some(*i) == d.attestation)
    {
        return Err(EvidenceError::Format(
            "the decision relied on an attestation the bundle does not carry".into(),
        ));
    }
    let (decision_index, event) =
        decision.ok_or_else(|| EvidenceError::Format("the bundle has no decision entry".into()))?;

    let clearance_checked = match &bundle.clearance {
        None => false,
        Some(token) => {
            let jwks = match &trust.jwks {
                Some(j) => j.clone(),
                None => serde_json::from_value(bundle.jwks.clone())
                    .map_err(|e| EvidenceError::Clearance(format!("the bundle's JWKS is malformed: {e}")))?,
            };
            check_clearance(token, &jwks, decision_index, &event)?;
            true
        }
    };

    let consistent_with_trusted = match &trust.trusted_checkpoint {
        None => None,
        Some(note) => Some(check_trusted(note, &verifier, &checkpoint, bundle)?),
    };
    Ok(EvidenceReport {
        decision: event.decision,
        entries: indexes,
        checkpoint_size: checkpoint.size,
        clearance_checked,
        keys_pinned: trust.log_key.is_some() && (trust.jwks.is_some() || bundle.clearance.is_none()),
        consistent_with_trusted,
        lifecycle,
    })
}

/// The clearance is signed by the control plane and says exactly what the decision says.
fn check_clearance(token: &str, jwks: &Jwks, index: LogIndex, d: &DecisionEvent) -> Result<(), EvidenceError> {
    let bad = |m: String| EvidenceError::Clearance(m);
    if d.decision != Decision::Allow {
        return Err(bad("a clearance exists for a decision that was not allow".into()));
    }
    let parsed = UnverifiedToken::parse(token).map_err(|e| bad(e.to_string()))?;
    let key = jwks.find(parsed.kid()).map_err(|e| bad(e.to_string()))?;
    let c = parsed.verify_signature(&key).map_err(|e| bad(e.to_string()))?;
    let checks = [
        ("jti", c.jti == d.execution_id),
        ("log", c.log == index),
        ("sub", c.sub == d.principal.as_str()),
        ("act", c.act == d.action),
        ("res", c.res == d.resource),
        ("args", c.args == d.arguments),
        ("aud", c.aud == d.environment),
        ("pol", Some(c.pol) == d.policy_version),
        ("exp", Some(c.exp) == d.expires),
        ("iat", c.iat == d.time),
        ("par", c.par == d.parent),
        ("env", c.env.as_ref().map(|e| e.measurements) == d.measurements),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((claim, _)) => Err(bad(format!("claim `{claim}` differs from the logged decision"))),
        None => Ok(()),
    }
}

/// The bundle's checkpoint and the auditor's saved one are the same log's history.
fn check_trusted(
    note: &str,
    verifier: &NoteVerifier,
    checkpoint: &VerifiedCheckpoint,
    bundle: &EvidenceBundle,
) -> Result<u64, EvidenceError> {
    let bad = |m: String| EvidenceError::Consistency(m);
    let trusted = Checkpoint::open(note, verifier).map_err(|e| bad(e.to_string()))?;
    if trusted.size == checkpoint.size {
        return if trusted.root == checkpoint.root {
            Ok(trusted.size)
        } else {
            Err(bad(format!(
                "two different roots for size {}: the log forked",
                trusted.size
            )))
        };
    }
    let (old, new) = if trusted.size < checkpoint.size {
        (trusted.checkpoint(), checkpoint.checkpoint())
    } else {
        (checkpoint.checkpoint(), trusted.checkpoint())
    };
    let c = bundle.consistency.as_ref().ok_or_else(|| {
        bad(format!(
            "the bundle has no consistency proof from size {}: export it with --consistency-with {}",
            old.size, trusted.size
        ))
    })?;
    if (c.from, c.to) != (old.size, new.size) {
        return Err(bad(format!(
            "the bundle proves consistency from {} to {}, not from {} to {}",
            c.from, c.to, old.size, new.size
        )));
    }
    let proof = c
        .proof
        .iter()
        .map(|p| b64(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof).map_err(|e| bad(e.to_string()))?;
    Ok(trusted.size)
}
