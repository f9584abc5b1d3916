//! RFC 6962 section 2.1 hashing, and Merkle tree hashes of leaf ranges computed from the
//! perfect subtrees a [`NodeSource`] keeps.

use std::collections::HashMap;
use std::convert::Infallible;

use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

/// MTH({}) = SHA-256() (RFC 6962 section 2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// MTH({d}) = SHA-256(0x00 || d).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// Interior node: SHA-256(0x01 || left || right). Takes byte slices because proofs
/// from outside may carry elements of any length (they then fail to match).
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A perfect subtree: the `2^level` leaves starting at `index * 2^level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

/// Where proof construction gets perfect-subtree hashes from.
pub trait NodeSource {
    type Error;
    fn node(&self, id: NodeId) -> Result<Hash, Self::Error>;
}

/// The largest power of two strictly less than `n` (n >= 2): the `k` of RFC 6962 section 2.1.
pub(crate) fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]) (RFC 6962 section 2.1), from perfect subtrees.
pub fn range_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let len = end - start;
    if len == 0 {
        return Ok(EMPTY_ROOT);
    }
    if len.is_power_of_two() && start.is_multiple_of(len) {
        return src.node(NodeId {
            level: len.trailing_zeros(),
            index: start / len,
        });
    }
    let k = if len == 1 { 1 } else { split_point(len) };
    let left = range_hash(src, start, start + k)?;
    let right = range_hash(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// A tree held in memory: leaves and every completed perfect subtree. For tests, offline
/// verification and `log verify`.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(nodes) = self.levels.get_mut(level) else {
                return;
            };
            nodes.push(hash);
            // A level with an even count just completed a pair: hash it one level up.
            match nodes.as_slice() {
                [.., left, right] if nodes.len().is_multiple_of(2) => hash = node_hash(left, right),
                _ => break,
            }
            level += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The root of the first `size` leaves (None if the tree is smaller).
    pub fn root(&self, size: u64) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        range_hash(self, 0, size).ok()
    }
}

impl NodeSource for MemoryTree {
    type Error = NodeId;
    fn node(&self, id: NodeId) -> Result<Hash, NodeId> {
        self.levels
            .get(id.level as usize)
            .and_then(|l| l.get(usize::try_from(id.index).ok()?))
            .copied()
            .ok_or(id)
    }
}

/// Records which nodes a proof needs, answering with zeros, so a store can fetch exactly
/// those and run the construction again over a [`HashMap`].
#[derive(Debug, Default)]
pub struct RecordingSource {
    wanted: std::cell::RefCell<Vec<NodeId>>,
}

impl RecordingSource {
    pub fn into_wanted(self) -> Vec<NodeId> {
        let mut v = self.wanted.into_inner();
        v.sort();
        v.dedup();
        v
    }
}

impl NodeSource for RecordingSource {
    type Error = Infallible;
    fn node(&self, id: NodeId) -> Result<Hash, Infallible> {
        self.wanted.borrow_mut().push(id);
        Ok([0; 32])
    }
}

impl NodeSource for HashMap<NodeId, Hash> {
    type Error = NodeId;
    fn node(&self, id: NodeId) -> Result<Hash, NodeId> {
        self.get(&id).copied().ok_or(id)
    }
}
