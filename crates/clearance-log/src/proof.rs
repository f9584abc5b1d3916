//! Inclusion and consistency proofs: construction (RFC 9162 sections 2.1.3.1 and
//! 2.1.4.1) and verification (sections 2.1.3.2 and 2.1.4.2).

use subtle::ConstantTimeEq as _;

use crate::hash::{Hash, NodeSource, node_hash, range_hash, split_point};

/// Why a proof was rejected, or could not be built. One variant per failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E = std::convert::Infallible> {
    #[error("index {index} is not inside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("size {first} is larger than size {second}")]
    SizesReversed { first: u64, second: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyFirstTree,
    #[error("the leaf hash is {got} bytes, not 32")]
    WrongLeafHashSize { got: usize },
    #[error("the proof has {got} hashes, {want} expected")]
    WrongProofSize { got: usize, want: usize },
    #[error("the computed root does not match the expected root")]
    RootMismatch,
    #[error("the computed root for the first tree does not match its expected root")]
    FirstRootMismatch,
    #[error("the computed root for the second tree does not match its expected root")]
    SecondRootMismatch,
    #[error("a node the proof needs is unavailable")]
    Source(E),
}

/// The audit path for leaf `index` in the tree of the first `size` leaves.
pub fn inclusion_proof<S: NodeSource>(src: &S, index: u64, size: u64) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out).map_err(ProofError::Source)?;
    Ok(out)
}

/// PATH(m, D[start:end]), deepest sibling first.
fn path<S: NodeSource>(src: &S, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of the first `first` and `second` leaves.
pub fn consistency_proof<S: NodeSource>(src: &S, first: u64, second: u64) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if first > second {
        return Err(ProofError::SizesReversed { first, second });
    }
    if first == 0 {
        return Err(ProofError::EmptyFirstTree);
    }
    let mut out = Vec::new();
    if first < second {
        subproof(src, first, 0, second, true, &mut out).map_err(ProofError::Source)?;
    }
    Ok(out)
}

/// SUBPROOF(m, D[start:end], b).
fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, start + k, b, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// How many hashes an inclusion proof for `index` in a tree of `size` has: the inner part
/// (levels where the path has a sibling to its left or right inside the tree) and the
/// border part (right-edge levels).
fn inclusion_size(index: u64, size: u64) -> (u32, u32) {
    let inner = bit_len(index ^ (size - 1));
    let border = (index >> inner).count_ones();
    (inner, border)
}

/// RFC 9162 section 2.1.3.2. The expected size is checked first, so a proof with extra or
/// missing hashes fails with `WrongProofSize` rather than a root mismatch.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if leaf.len() != 32 {
        return Err(ProofError::WrongLeafHashSize { got: leaf.len() });
    }
    let (inner, border) = inclusion_size(index, size);
    let want = (inner + border) as usize;
    if proof.len() != want {
        return Err(ProofError::WrongProofSize { got: proof.len(), want });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r: Vec<u8> = leaf.to_vec();
    for p in proof {
        let p = p.as_ref();
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r).to_vec();
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p).to_vec();
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongProofSize { got: proof.len(), want });
    }
    if ct_eq(&r, root) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// RFC 9162 section 2.1.4.2.
pub fn verify_consistency<P: AsRef<[u8]>>(
    first: u64,
    second: u64,
    first_root: &[u8],
    second_root: &[u8],
    proof: &[P],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesReversed { first, second });
    }
    if first == 0 {
        return Err(ProofError::EmptyFirstTree);
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofSize {
                got: proof.len(),
                want: 0,
            });
        }
        return if ct_eq(first_root, second_root) {
            Ok(())
        } else {
            Err(ProofError::SecondRootMismatch)
        };
    }
    // The proof is the suffix of the inclusion proof of leaf `first - 1` in the second
    // tree, above the level where the first tree's rightmost perfect subtree ends; it
    // starts with that subtree's root unless the first tree is itself perfect.
    let shift = first.trailing_zeros();
    let (inner, border) = inclusion_size(first - 1, second);
    let inner = inner - shift;
    let seeded = first.is_power_of_two();
    let want = usize::from(!seeded) + (inner + border) as usize;
    if proof.len() != want {
        return Err(ProofError::WrongProofSize { got: proof.len(), want });
    }
    let (seed, rest): (&[u8], &[P]) = match proof.split_first() {
        _ if seeded => (first_root, proof),
        Some((seed, rest)) => (seed.as_ref(), rest),
        // `want` is at least 1 when not seeded, so the length check above rules this out.
        None => return Err(ProofError::WrongProofSize { got: 0, want }),
    };
    let (mut f, mut s) = (first - 1, second - 1);
    // Skip the levels inside the first tree's rightmost perfect subtree.
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr: Vec<u8> = seed.to_vec();
    let mut sr: Vec<u8> = seed.to_vec();
    for c in rest {
        let c = c.as_ref();
        if s == 0 {
            return Err(ProofError::WrongProofSize { got: proof.len(), want });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr).to_vec();
            sr = node_hash(c, &sr).to_vec();
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c).to_vec();
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongProofSize { got: proof.len(), want });
    }
    if !ct_eq(&fr, first_root) {
        return Err(ProofError::FirstRootMismatch);
    }
    if !ct_eq(&sr, second_root) {
        return Err(ProofError::SecondRootMismatch);
    }
    Ok(())
}

/// Constant-time comparison of roots (their lengths are public).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}
