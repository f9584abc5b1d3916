//! A clearance (JWS compact) from an agent or the network, verified against a real key:
//! parsing, header checks, signature, claims and the call binding never panic, and
//! nothing but the one genuine token verifies.
#![no_main]

use std::sync::OnceLock;

use clearance_verify::{ExpectedCall, Sample, UnverifiedToken, Verifier};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

fn fixture() -> &'static (Sample, Verifier, String) {
    static F: OnceLock<(Sample, Verifier, String)> = OnceLock::new();
    F.get_or_init(|| {
        let sample = Sample::refund("https://cp.test", NOW).expect("a sample clearance");
        let verifier = Verifier::new(sample.jwks(), "https://cp.test", None);
        let token = sample.token().expect("signing the sample");
        (sample, verifier, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (sample, verifier, genuine) = fixture();
    let _ = UnverifiedToken::parse(text);
    let call = ExpectedCall::new("refund", &sample.resource, &sample.args).expect("the sample call");
    if verifier.verify(text, &call, NOW).is_ok() {
        assert_eq!(text, genuine, "a token other than the genuine one verified");
    }
    let _ = verifier.inspect(text, NOW);
});
