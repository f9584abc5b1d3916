//! A JWK set fetched from a server or a file: parsed, then used to verify a genuine
//! clearance. No key set but one holding the real key may make it verify.
#![no_main]

use std::sync::OnceLock;

use clearance_verify::{ExpectedCall, Jwks, Sample, Verifier};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

fn fixture() -> &'static (Sample, String) {
    static F: OnceLock<(Sample, String)> = OnceLock::new();
    F.get_or_init(|| {
        let sample = Sample::refund("https://cp.test", NOW).expect("a sample clearance");
        let token = sample.token().expect("signing the sample");
        (sample, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(jwks) = serde_json::from_slice::<Jwks>(data) else {
        return;
    };
    let (sample, token) = fixture();
    let real = sample.signer.jwk();
    let verifier = Verifier::new(jwks.clone(), "https://cp.test", None);
    let call = ExpectedCall::new("refund", &sample.resource, &sample.args).expect("the sample call");
    if verifier.verify(token, &call, NOW).is_ok() {
        assert!(
            jwks.keys.iter().any(|k| k.x == real.x),
            "a key set without the signing key verified its clearance"
        );
    }
});
