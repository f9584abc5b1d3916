//! Appending to a stored tree without reading it back node by node: the right edge of a
//! tree of `size` leaves (its "frontier", one perfect subtree per set bit of `size`) is all
//! that new leaves ever combine with (RFC 6962 section 2.1 tree shape). A store fetches the
//! frontier once per batch, and [`append_nodes`] computes every node the batch completes.

use std::collections::HashMap;

use crate::hash::{Hash, NodeId, node_hash};

/// The perfect subtrees on the right edge of a tree of `size` leaves, highest first: the
/// only stored nodes that leaves appended at `size` and after can combine with.
pub fn frontier(size: u64) -> Vec<NodeId> {
    (0..64u32)
        .rev()
        .filter(|level| size >> level & 1 == 1)
        .map(|level| NodeId {
            level,
            index: (size >> level) - 1,
        })
        .collect()
}

/// Every node (leaves included) that appending `leaves` at index `size` completes, in the
/// order they complete. `frontier` must hold the hashes of [`frontier`]`(size)`; a missing
/// one is returned as the error.
pub fn append_nodes(
    size: u64,
    frontier: &HashMap<NodeId, Hash>,
    leaves: &[Hash],
) -> Result<Vec<(NodeId, Hash)>, NodeId> {
    let mut edge: HashMap<NodeId, Hash> = frontier.clone();
    let mut out = Vec::with_capacity(leaves.len() * 2);
    for (i, leaf) in leaves.iter().enumerate() {
        let mut id = NodeId {
            level: 0,
            index: size + i as u64,
        };
        let mut hash = *leaf;
        out.push((id, hash));
        while id.index & 1 == 1 {
            let left_id = NodeId {
                level: id.level,
                index: id.index - 1,
            };
            let left = edge.remove(&left_id).ok_or(left_id)?;
            hash = node_hash(&left, &hash);
            id = NodeId {
                level: id.level + 1,
                index: id.index >> 1,
            };
            out.push((id, hash));
        }
        edge.insert(id, hash);
    }
    Ok(out)
}

/// A tree that keeps only its frontier: leaves go in one at a time, and the root of the
/// tree so far comes out, in memory and time logarithmic in its size. For walking a whole
/// log (`clearance log verify`), where keeping every node would cost 64 bytes a leaf.
#[derive(Debug, Default, Clone)]
pub struct CompactTree {
    size: u64,
    /// The frontier's hashes, highest subtree first.
    edge: Vec<Hash>,
}

impl CompactTree {
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        // Each trailing one bit of the old size is a subtree the new leaf completes.
        let mut size = self.size;
        while size & 1 == 1 {
            let Some(left) = self.edge.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.edge.push(hash);
        self.size += 1;
    }

    pub const fn size(&self) -> u64 {
        self.size
    }

    /// MTH of every leaf pushed so far: the frontier's subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut hashes = self.edge.iter().rev();
        let Some(last) = hashes.next() else {
            return crate::hash::EMPTY_ROOT;
        };
        hashes.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{MemoryTree, NodeSource, leaf_hash};

    #[test]
    fn the_compact_tree_has_the_memory_trees_roots() {
        let mut compact = CompactTree::default();
        let mut full = MemoryTree::default();
        assert_eq!(compact.root(), crate::hash::EMPTY_ROOT);
        for i in 0u64..300 {
            let leaf = leaf_hash(&i.to_be_bytes());
            compact.push(leaf);
            full.push(leaf);
            assert_eq!(compact.size(), i + 1);
            assert_eq!(Some(compact.root()), full.root(i + 1), "size {}", i + 1);
            assert_eq!(compact.edge.len(), frontier(i + 1).len());
        }
    }

    /// Against the in-memory tree: any split of the leaves into batches gives the same
    /// nodes as pushing them one by one.
    #[test]
    fn batches_complete_the_same_nodes_as_the_memory_tree() {
        for total in [0u64, 1, 2, 3, 7, 8, 9, 31, 64, 100] {
            for batch in [1usize, 2, 3, 5, 16, 200] {
                let leaves: Vec<Hash> = (0..total).map(|i| leaf_hash(&i.to_be_bytes())).collect();
                let mut stored: HashMap<NodeId, Hash> = HashMap::new();
                let mut size = 0u64;
                for chunk in leaves.chunks(batch) {
                    let edge: HashMap<NodeId, Hash> = frontier(size)
                        .into_iter()
                        .map(|id| (id, *stored.get(&id).expect("frontier node stored")))
                        .collect();
                    for (id, h) in append_nodes(size, &edge, chunk).expect("complete frontier") {
                        assert!(stored.insert(id, h).is_none(), "node {id:?} completed twice");
                    }
                    size += chunk.len() as u64;
                }
                let mut tree = MemoryTree::default();
                leaves.iter().for_each(|l| tree.push(*l));
                for (id, h) in &stored {
                    assert_eq!(
                        tree.node(*id).ok(),
                        Some(*h),
                        "node {id:?} at total {total} batch {batch}"
                    );
                }
                assert_eq!(stored.len() as u64, 2 * total - u64::from(total.count_ones()));
            }
        }
    }

    #[test]
    fn a_missing_frontier_node_is_named() {
        let leaf = leaf_hash(b"x");
        assert_eq!(
            append_nodes(1, &HashMap::new(), &[leaf]),
            Err(NodeId { level: 0, index: 0 })
        );
        assert_eq!(
            frontier(6),
            vec![NodeId { level: 2, index: 0 }, NodeId { level: 1, index: 2 }]
        );
        assert!(frontier(0).is_empty());
    }
}
