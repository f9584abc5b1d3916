//! RFC 8785 canonicalization of any JSON an agent sends as arguments: never panics, and
//! is a fixed point (canonicalizing the canonical form changes nothing), so one call has
//! one argument digest.
#![no_main]

use clearance_model::{argument_digest, canonical_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(canonical) = canonical_json(&value) else { return };
    let reparsed: serde_json::Value = serde_json::from_slice(&canonical).expect("canonical JSON parses back");
    let again = canonical_json(&reparsed).expect("canonical JSON canonicalizes again");
    assert_eq!(canonical, again, "canonicalization is not a fixed point");
    assert_eq!(
        argument_digest(&value).ok(),
        argument_digest(&reparsed).ok(),
        "one call, two digests"
    );
});
