//! The audit log on the control plane: roots and proofs from the store's nodes,
//! checkpoints that are never inconsistent with earlier ones, and evidence bundles.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clearance_log::{
    Checkpoint, Hash, NoteSigner, RecordingSource, consistency_proof, inclusion_proof, range_hash, verify_consistency,
};
use clearance_model::wire::{
    ConsistencyProofView, EVIDENCE_FORMAT, EvidenceBundle, EvidenceConsistency, EvidenceEntry, InclusionProofView,
    LogEntries, LogEntryView,
};
use clearance_model::{ExecutionId, Role};

use crate::engine::Caller;
use crate::error::CoreError;
use crate::service::{ControlPlane, require};
use crate::store::StoredCheckpoint;

/// How long a node without the checkpointer role waits for a checkpoint it needs.
pub const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most entries one `log_entries` call returns.
pub const MAX_ENTRIES_PER_PAGE: u64 = 1000;

pub(crate) fn b64(h: &[u8]) -> String {
    STANDARD.encode(h)
}

/// The tree's upper nodes (perfect subtrees of 256 leaves and more), kept in memory once
/// read. A node exists only once all its leaves do and never changes after, so nothing
/// invalidates them, on one node or many; a proof at a million entries then reads about
/// 8 of its 20 nodes from the store. Bounded: past the cap, nodes are read as before.
#[derive(Debug, Default)]
pub(crate) struct UpperNodes {
    nodes: std::sync::RwLock<std::collections::HashMap<clearance_log::NodeId, Hash>>,
}

/// Lowest level kept: subtrees of 2^8 leaves.
const UPPER_LEVEL: u32 = 8;
/// Most nodes kept (about 4 MB), enough for every upper node of a log of 8 million entries.
const MAX_UPPER_NODES: usize = 1 << 16;

type NodeMap = std::collections::HashMap<clearance_log::NodeId, Hash>;

impl UpperNodes {
    /// The nodes of `wanted` held here, and the ids of the rest.
    fn split(&self, wanted: &[clearance_log::NodeId]) -> (NodeMap, Vec<clearance_log::NodeId>) {
        let held = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut found = NodeMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for id in wanted {
            match held.get(id) {
                Some(h) => {
                    found.insert(*id, *h);
                }
                None => missing.push(*id),
            }
        }
        (found, missing)
    }

    fn keep(&self, fetched: &NodeMap) {
        let upper = fetched.iter().filter(|(id, _)| id.level >= UPPER_LEVEL);
        let mut held = self.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, h) in upper {
            if held.len() >= MAX_UPPER_NODES {
                break;
            }
            held.insert(*id, *h);
        }
    }
}

impl ControlPlane {
    /// Fetch exactly the nodes `plan` asks for, by running it once over a recorder.
    async fn nodes_for(
        &self,
        plan: impl FnOnce(&RecordingSource),
    ) -> Result<std::collections::HashMap<clearance_log::NodeId, Hash>, CoreError> {
        let recorder = RecordingSource::default();
        plan(&recorder);
        let wanted = recorder.into_wanted();
        let (mut nodes, missing) = self.upper_nodes.split(&wanted);
        if !missing.is_empty() {
            let fetched = self.store.log_nodes(&missing).await?;
            self.upper_nodes.keep(&fetched);
            nodes.extend(fetched);
        }
        Ok(nodes)
    }

    async fn check_size(&self, size: u64) -> Result<(), CoreError> {
        let current = self.store.log_size().await?;
        if size > current {
            return Err(CoreError::InvalidRequest(format!(
                "the log has {current} entries, not {size}"
            )));
        }
        Ok(())
    }

    /// The root of the tree of the first `size` entries. Callers have just read the log
    /// size; a node missing beyond it is an error all the same.
    async fn log_root(&self, size: u64) -> Result<Hash, CoreError> {
        let nodes = self
            .nodes_for(|r| {
                let _ = range_hash(r, 0, size);
            })
            .await?;
        range_hash(&nodes, 0, size).map_err(|id| CoreError::Internal(format!("log node {id:?} is missing")))
    }

    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProofView, CoreError> {
        if index >= size {
            return Err(CoreError::InvalidRequest(format!(
                "index {index} is not inside a tree of size {size}"
            )));
        }
        self.check_size(size).await?;
        let leaf_id = clearance_log::NodeId { level: 0, index };
        // The leaf rides in the same fetch as the proof's nodes.
        let nodes = self
            .nodes_for(|r| {
                let _ = inclusion_proof(r, index, size);
                let _ = clearance_log::NodeSource::node(r, leaf_id);
            })
            .await?;
        let proof = inclusion_proof(&nodes, index, size).map_err(|e| CoreError::Internal(e.to_string()))?;
        let leaf = nodes
            .get(&leaf_id)
            .copied()
            .ok_or_else(|| CoreError::Internal(format!("log leaf {index} is missing")))?;
        Ok(InclusionProofView {
            index,
            size,
            leaf_hash: b64(&leaf),
            proof: proof.iter().map(|h| b64(h)).collect(),
        })
    }

    async fn raw_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, CoreError> {
        if from == 0 || from > to {
            return Err(CoreError::InvalidRequest(format!(
                "no consistency proof from size {from} to size {to}"
            )));
        }
        self.check_size(to).await?;
        let nodes = self
            .nodes_for(|r| {
                let _ = consistency_proof(r, from, to);
            })
            .await?;
        consistency_proof(&nodes, from, to).map_err(|e| CoreError::Internal(e.to_string()))
    }

    pub async fn consistency_proof(&self, from: u64, to: u64) -> Result<ConsistencyProofView, CoreError> {
        let proof = self.raw_consistency(from, to).await?;
        Ok(ConsistencyProofView {
            from,
            to,
            proof: proof.iter().map(|h| b64(h)).collect(),
        })
    }

    /// Sign a checkpoint for the current tree, unless the latest one already covers it.
    /// Before signing, the new tree is proven consistent with the latest stored
    /// checkpoint; if it is not (the database was tampered with), nothing is signed.
    pub async fn checkpoint(&self) -> Result<StoredCheckpoint, CoreError> {
        let size = self.store.log_size().await?;
        let latest = self.store.latest_checkpoint().await?;
        if let Some(l) = &latest {
            if l.size == size {
                return Ok(l.clone());
            }
            if l.size > size {
                return Err(CoreError::Internal(format!(
                    "refusing to sign: the log has {size} entries but was checkpointed at {}",
                    l.size
                )));
            }
        }
        let root = self.log_root(size).await?;
        if let Some(l) = latest.as_ref().filter(|l| l.size > 0) {
            let proof = self.raw_consistency(l.size, size).await?;
            verify_consistency(l.size, size, &l.root, &root, &proof).map_err(|e| {
                tracing::error!(from = l.size, to = size, error = %e, "the log is inconsistent with its last checkpoint");
                CoreError::Internal(format!(
                    "refusing to sign: the log is not consistent with the checkpoint at size {}: {e}",
                    l.size
                ))
            })?;
        }
        let note = Checkpoint {
            origin: self.log_signer.name().to_owned(),
            size,
            root,
        }
        .sign(&self.log_signer)
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        let checkpoint = StoredCheckpoint { size, root, note };
        self.store.save_checkpoint(&checkpoint, self.clock.now()).await?;
        Ok(checkpoint)
    }

    /// A checkpoint of the log as it is now, on request of an auditor or admin.
    pub async fn checkpoint_for(&self, caller: &Caller) -> Result<StoredCheckpoint, CoreError> {
        require(caller, &[Role::Auditor, Role::Admin])?;
        let size = self.store.log_size().await?;
        self.checkpoint_covering(size).await
    }

    /// The latest signed checkpoint, signing the first one if there is none.
    pub async fn latest_checkpoint(&self) -> Result<StoredCheckpoint, CoreError> {
        match self.store.latest_checkpoint().await? {
            Some(c) => Ok(c),
            None => self.checkpoint_covering(0).await,
        }
    }

    /// A checkpoint of at least `size` entries. Only the node holding the checkpointer
    /// role signs (one node at a time across a cluster); another node waits for the
    /// holder's next checkpoint, which it signs within a checkpoint interval of the log
    /// growing, for up to [`CHECKPOINT_WAIT`].
    pub async fn checkpoint_covering(&self, size: u64) -> Result<StoredCheckpoint, CoreError> {
        if self.store.hold_checkpointer().await? {
            return self.checkpoint().await;
        }
        let deadline = tokio::time::Instant::now() + CHECKPOINT_WAIT;
        loop {
            if let Some(latest) = self.store.latest_checkpoint().await?
                && latest.size >= size
            {
                return Ok(latest);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoreError::StorageUnavailable(format!(
                    "no checkpoint covers {size} entries yet: the node holding the checkpointer role has not signed one \
                     within {} s",
                    CHECKPOINT_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Refuse to serve from a log that no longer matches what it signed.
    pub(crate) async fn check_log_integrity(&self) -> Result<(), CoreError> {
        let Some(latest) = self.store.latest_checkpoint().await? else {
            return Ok(());
        };
        let size = self.store.log_size().await?;
        if size < latest.size {
            return Err(CoreError::Internal(format!(
                "the log has {size} entries but was checkpointed at {}: run `clearance log verify`",
                latest.size
            )));
        }
        let root = self.log_root(latest.size).await?;
        if root != latest.root {
            return Err(CoreError::Internal(format!(
                "the log's first {} entries no longer hash to their signed checkpoint: run `clearance log verify`",
                latest.size
            )));
        }
        Ok(())
    }

    pub fn log_verifier_key(&self) -> String {
        self.log_signer.verifier().to_vkey()
    }

    pub fn log_origin(&self) -> &str {
        self.log_signer.name()
    }

    pub async fn log_entries(&self, caller: &Caller, start: u64, end: u64) -> Result<LogEntries, CoreError> {
        require(caller, &[Role::Auditor, Role::Admin])?;
        if end < start || end - start > MAX_ENTRIES_PER_PAGE {
            return Err(CoreError::InvalidRequest(format!(
                "ask for 0 to {MAX_ENTRIES_PER_PAGE} entries with start <= end (got {start}..{end})"
            )));
        }
        let entries = self.store.log_entries(start, end).await?;
        Ok(LogEntries {
            entries: entries
                .into_iter()
                .map(|(index, e)| LogEntryView { index, entry: b64(&e) })
                .collect(),
        })
    }

    /// An execution's evidence bundle, proven against a checkpoint covering all its
    /// entries. `consistency_with` adds a consistency proof between that tree size and
    /// the checkpoint's, for an auditor who kept an earlier (or later) checkpoint.
    pub async fn evidence(
        &self,
        caller: &Caller,
        execution: &ExecutionId,
        consistency_with: Option<u64>,
    ) -> Result<EvidenceBundle, CoreError> {
        require(caller, &[Role::Auditor, Role::Admin])?;
        let mut entries = self.store.execution_entries(execution).await?;
        // The attestation the decision relied on joins the bundle (it precedes it).
        let attestation = entries.first().and_then(|(_, bytes)| {
            match serde_json::from_slice::<clearance_model::event::Event>(bytes) {
                Ok(clearance_model::event::Event::Decision(d)) => d.attestation,
                _ => None,
            }
        });
        if let Some(at) = attestation {
            let mut found = self.store.log_entries(at.0, at.0 + 1).await?;
            entries.splice(0..0, found.drain(..));
        }
        let last = entries
            .last()
            .map(|(i, _)| i.0)
            .ok_or_else(|| CoreError::NotFound(format!("execution `{execution}`")))?;
        let mut checkpoint = self.latest_checkpoint().await?;
        if checkpoint.size <= last {
            checkpoint = self.checkpoint_covering(last + 1).await?;
        }
        let mut out = Vec::with_capacity(entries.len());
        for (index, entry) in entries {
            let proof = self.inclusion_proof(index.0, checkpoint.size).await?;
            out.push(EvidenceEntry {
                index,
                entry: b64(&entry),
                proof: proof.proof,
            });
        }
        let consistency = match consistency_with {
            None => None,
            Some(size) => {
                let (from, to) = if size <= checkpoint.size {
                    (size, checkpoint.size)
                } else {
                    (checkpoint.size, size)
                };
                let proof = if from == to {
                    Vec::new()
                } else {
                    self.raw_consistency(from, to).await?
                };
                Some(EvidenceConsistency {
                    from,
                    to,
                    proof: proof.iter().map(|h| b64(h)).collect(),
                })
            }
        };
        let clearance = self.store.clearance(execution).await?;
        // The key that signed the clearance, even if it has been rotated out since.
        let signed_by = clearance
            .as_deref()
            .and_then(|t| clearance_artifact::UnverifiedToken::parse(t).ok())
            .and_then(|t| self.signing_key(t.kid()));
        let jwks = serde_json::to_value(clearance_artifact::Jwks {
            keys: vec![signed_by.unwrap_or_else(|| self.engine.signer().jwk())],
        })
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(EvidenceBundle {
            format: EVIDENCE_FORMAT.to_owned(),
            execution_id: execution.clone(),
            clearance,
            entries: out,
            checkpoint: checkpoint.note,
            log_verifier_key: self.log_verifier_key(),
            jwks,
            consistency,
        })
    }
}

/// Build the log's note signer with the origin fixed at first start.
pub(crate) fn log_signer(origin: String, key: clearance_artifact::SigningKey) -> Result<NoteSigner, CoreError> {
    NoteSigner::new(origin, key).map_err(|e| CoreError::Internal(format!("log origin: {e}")))
}
