//! Signed notes and checkpoints (C2SP signed-note, tlog-checkpoint) from a log or an
//! auditor, and verifier keys pasted by a user: parsing and opening never panic, and a
//! note opens under the real key only if that key signed it.
#![no_main]

use std::sync::OnceLock;

use clearance_log::{Checkpoint, NoteSigner, NoteVerifier, SignedNote};
use libfuzzer_sys::fuzz_target;

fn signer() -> &'static NoteSigner {
    static S: OnceLock<NoteSigner> = OnceLock::new();
    S.get_or_init(|| {
        let key = clearance_artifact::SigningKey::from_bytes(&[9; 32]);
        NoteSigner::new("fuzz.test/log", key).expect("a note signer")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = SignedNote::parse(text);
    let _ = Checkpoint::from_text(text);
    if let Ok(v) = NoteVerifier::parse(text) {
        let _ = v.verify(text);
        let _ = v.to_vkey();
    }
    let verifier = signer().verifier();
    if let Ok(body) = verifier.verify(text) {
        // What opened must be what the signer signs for that body.
        assert!(text.starts_with(&body), "an opened note does not start with its body");
    }
    let _ = Checkpoint::open(text, &verifier);
});
