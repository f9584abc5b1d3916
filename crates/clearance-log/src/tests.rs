use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::Value;

use crate::*;

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

fn proof_of(v: &Value) -> Vec<Vec<u8>> {
    v.as_array().map(|a| a.iter().map(b64).collect()).unwrap_or_default()
}

fn vectors(kind: &str) -> Vec<(String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/merkle")
        .join(kind);
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                out.push((path.display().to_string(), v));
            }
        }
    }
    out
}

/// transparency-dev/merkle's inclusion vectors (testdata/README.md).
#[test]
fn inclusion_known_answers() {
    let cases = vectors("inclusion");
    assert!(cases.len() > 60, "{}", cases.len());
    for (name, v) in cases {
        let got = verify_inclusion(
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
            &b64(&v["leafHash"]),
            &proof_of(&v["proof"]),
            &b64(&v["root"]),
        );
        assert_eq!(got.is_err(), v["wantErr"].as_bool().unwrap(), "{name}: {got:?}");
    }
}

/// transparency-dev/merkle's consistency vectors.
#[test]
fn consistency_known_answers() {
    let cases = vectors("consistency");
    assert!(cases.len() > 60, "{}", cases.len());
    for (name, v) in cases {
        let got = verify_consistency(
            v["size1"].as_u64().unwrap(),
            v["size2"].as_u64().unwrap(),
            &b64(&v["root1"]),
            &b64(&v["root2"]),
            &proof_of(&v["proof"]),
        );
        assert_eq!(got.is_err(), v["wantErr"].as_bool().unwrap(), "{name}: {got:?}");
    }
}

/// The example in the signed-note spec ("Verifier keys", "Example").
#[test]
fn signed_note_spec_example() {
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let verifier = NoteVerifier::parse(vkey).unwrap();
    assert_eq!(verifier.to_vkey(), vkey);
    assert_eq!(verifier.verify(note).unwrap(), "This is an example message.\n");
    let tampered = note.replace("example message", "exemple message");
    assert!(matches!(
        verifier.verify(&tampered),
        Err(NoteError::BadSignature { .. })
    ));
    // Signatures by unknown keys are ignored; with no known one the note is rejected.
    let other = "This is an example message.\n\n\u{2014} example.com/bar Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    assert!(matches!(
        verifier.verify(other),
        Err(NoteError::NoKnownSignature { .. })
    ));
    for bad in [
        "no blank line\n\u{2014} example.com/foo AAAA\n",
        "text\n\n- example.com/foo Uw2QOkn8\n",
        "text\x07\n\n\u{2014} example.com/foo Uw2QOkn8srV1\n",
        "text\n\n\u{2014} example.com/foo Uw2QOkn8srV1",
    ] {
        assert!(SignedNote::parse(bad).is_err(), "{bad:?}");
    }
}

fn signer() -> NoteSigner {
    NoteSigner::new("clearance.test/log", ed25519_dalek::SigningKey::from_bytes(&[3; 32])).unwrap()
}

/// Verifier keys whose base64 contains `+` (standard alphabet) still parse.
#[test]
fn verifier_keys_with_plus_in_base64_round_trip() {
    let mut seen_plus = 0;
    for seed in 0..64u8 {
        let s = NoteSigner::new("log.example/x", ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).unwrap();
        let vkey = s.verifier().to_vkey();
        if vkey.matches('+').count() > 2 {
            seen_plus += 1;
        }
        assert_eq!(NoteVerifier::parse(&vkey).unwrap(), s.verifier(), "{vkey}");
    }
    assert!(seen_plus > 0, "no key with `+` in its base64 among 64 seeds");
}

#[test]
fn checkpoints_sign_open_and_parse_strictly() {
    let s = signer();
    let cp = Checkpoint {
        origin: "clearance.test/log".into(),
        size: 42,
        root: leaf_hash(b"x"),
    };
    let note = cp.sign(&s).unwrap();
    assert!(note.starts_with("clearance.test/log\n42\n"));
    let verifier = NoteVerifier::parse(&s.verifier().to_vkey()).unwrap();
    assert_eq!(Checkpoint::open(&note, &verifier).unwrap().checkpoint(), &cp);
    let other = Checkpoint {
        origin: "elsewhere/log".into(),
        ..cp.clone()
    }
    .sign(&s)
    .unwrap();
    assert!(matches!(
        Checkpoint::open(&other, &verifier),
        Err(CheckpointError::WrongOrigin { .. })
    ));
    for bad in [
        "o\n042\nAAAA\n",
        "o\n-1\nAAAA\n",
        "\n1\nAAAA\n",
        "o\n1\n",
        "o\n1\nnot base64\n",
        "o\n1\nAAAA",
    ] {
        assert!(Checkpoint::from_text(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tlog_proof_round_trip() {
    let mut tree = MemoryTree::default();
    for i in 0..13u32 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let s = signer();
    let cp = Checkpoint {
        origin: s.name().into(),
        size: 13,
        root: tree.root(13).unwrap(),
    };
    let proof = TlogProof {
        extra: Some(b"execution abc".to_vec()),
        index: 6,
        proof: inclusion_proof(&tree, 6, 13).unwrap(),
        checkpoint: cp.sign(&s).unwrap(),
    };
    let text = proof.encode();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
    let parsed = TlogProof::parse(&text).unwrap();
    assert_eq!(parsed, proof);
    assert_eq!(
        parsed
            .verify(&leaf_hash(&6u32.to_be_bytes()), &s.verifier())
            .unwrap()
            .checkpoint(),
        &cp
    );
    assert!(parsed.verify(&leaf_hash(&7u32.to_be_bytes()), &s.verifier()).is_err());
}

// A straight transcription of RFC 6962 section 2.1 over a Vec, as the model.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn model_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m < k {
        let mut p = model_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = model_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn model_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m <= k {
        let mut p = model_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = model_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn flip(bytes: &mut [u8], bit: usize) {
    let bit = bit % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against the Vec model, for sizes up to thousands of leaves: roots and proofs match,
    /// every proof verifies, and any single-bit change to a leaf, proof, root or size fails.
    #[test]
    fn log_matches_vec_model(size in 1usize..3000, picks in prop::collection::vec(any::<prop::sample::Index>(), 4), bit in any::<usize>()) {
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect();
        let mut tree = MemoryTree::default();
        for l in &leaves { tree.push(*l); }
        let n = size as u64;
        prop_assert_eq!(tree.root(n).unwrap(), mth(&leaves));

        let index = picks[0].index(size);
        let proof = inclusion_proof(&tree, index as u64, n).unwrap();
        prop_assert_eq!(&proof, &model_path(index, &leaves));
        let root = mth(&leaves);
        prop_assert!(verify_inclusion(index as u64, n, &leaves[index], &proof, &root).is_ok());

        let mut leaf = leaves[index];
        flip(&mut leaf, bit);
        prop_assert!(verify_inclusion(index as u64, n, &leaf, &proof, &root).is_err());
        let mut bad_root = root;
        flip(&mut bad_root, bit);
        prop_assert!(verify_inclusion(index as u64, n, &leaves[index], &proof, &bad_root).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = picks[1].index(bad.len());
            flip(&mut bad[at], bit);
            prop_assert!(verify_inclusion(index as u64, n, &leaves[index], &bad, &root).is_err());
        }
        // The size is bound by the signed checkpoint: a checkpoint whose size has one bit
        // changed does not open, so the proof cannot be checked against it.
        let s = signer();
        let note = Checkpoint { origin: s.name().into(), size: n, root }.sign(&s).unwrap();
        let other_size = n ^ (1 << (bit % 12));
        let forged = note.replacen(&format!("\n{n}\n"), &format!("\n{other_size}\n"), 1);
        prop_assert!(forged != note);
        prop_assert!(Checkpoint::open(&forged, &s.verifier()).is_err());

        let first = picks[2].index(size) + 1;
        let proof = consistency_proof(&tree, first as u64, n).unwrap();
        prop_assert_eq!(&proof, &if first == size { vec![] } else { model_subproof(first, &leaves, true) });
        let first_root = mth(&leaves[..first]);
        prop_assert!(verify_consistency(first as u64, n, &first_root, &root, &proof).is_ok());
        let mut bad_first = first_root;
        flip(&mut bad_first, bit);
        prop_assert!(verify_consistency(first as u64, n, &bad_first, &root, &proof).is_err());
        prop_assert!(verify_consistency(first as u64, n, &first_root, &bad_root, &proof).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = picks[3].index(bad.len());
            flip(&mut bad[at], bit);
            prop_assert!(verify_consistency(first as u64, n, &first_root, &root, &bad).is_err());
        }
    }
}

#[test]
fn recording_source_names_exactly_the_nodes_needed() {
    let mut tree = MemoryTree::default();
    for i in 0..1000u32 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let rec = RecordingSource::default();
    let _ = inclusion_proof(&rec, 377, 1000);
    let wanted = rec.into_wanted();
    let map: std::collections::HashMap<NodeId, Hash> = wanted.iter().map(|id| (*id, tree.node(*id).unwrap())).collect();
    assert_eq!(
        inclusion_proof(&map, 377, 1000).unwrap(),
        inclusion_proof(&tree, 377, 1000).unwrap()
    );
    assert!(wanted.len() <= 2 * 10, "{}", wanted.len());
}
