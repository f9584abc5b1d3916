//! An evidence bundle handed to an auditor: parsed and verified offline with the keys it
//! carries. Never panics.
#![no_main]

use clearance_model::wire::EvidenceBundle;
use clearance_verify::{EvidenceTrust, verify_evidence};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = serde_json::from_slice::<EvidenceBundle>(data) else {
        return;
    };
    let _ = verify_evidence(&bundle, &EvidenceTrust::default());
});
