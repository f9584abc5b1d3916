//! A tlog-proof (C2SP) from an evidence bundle: parsed, then checked against a leaf and
//! the log's key. Never panics; a forged proof never verifies.
#![no_main]

use std::sync::OnceLock;

use clearance_log::{NoteSigner, NoteVerifier, TlogProof, leaf_hash};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static NoteVerifier {
    static V: OnceLock<NoteVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let key = clearance_artifact::SigningKey::from_bytes(&[9; 32]);
        NoteSigner::new("fuzz.test/log", key).expect("a note signer").verifier()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(proof) = TlogProof::parse(text) else { return };
    let _ = proof.encode();
    // Nobody but the fuzzer's fixed key signs here, and it signed nothing: no proof may
    // verify.
    assert!(
        proof.verify(&leaf_hash(b"entry"), verifier()).is_err(),
        "a proof verified without a signed checkpoint"
    );
});
