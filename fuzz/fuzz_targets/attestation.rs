//! An environment's attestation request (evidence and signature), checked as the control
//! plane checks it before touching storage. Never panics; only evidence signed by the
//! registered key passes.
#![no_main]

use std::sync::OnceLock;

use clearance_core::{check_evidence, parse_attestation_key};
use clearance_model::Timestamp;
use clearance_model::environment::AttestRequest;
use libfuzzer_sys::fuzz_target;

fn registered_key() -> &'static String {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| {
        use base64::Engine as _;
        let key = clearance_artifact::SigningKey::from_bytes(&[5; 32]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_attestation_key(text);
    }
    let Ok(req) = serde_json::from_slice::<AttestRequest>(data) else {
        return;
    };
    // The fuzzer cannot sign with the registered key: nothing it makes may pass.
    assert!(
        check_evidence(
            &req.evidence.environment,
            &req,
            registered_key(),
            Timestamp(1_800_000_000)
        )
        .is_err(),
        "unsigned evidence passed"
    );
});
