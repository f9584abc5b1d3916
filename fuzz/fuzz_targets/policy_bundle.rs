//! A policy bundle pushed by an admin (schema and policies, split at the first NUL byte),
//! compiled as on push: Cedar's parser and validator behind the nesting and size bounds.
//! Never panics, never overflows the stack.
#![no_main]

use clearance_model::wire::PolicyBundle;
use clearance_policy::CompiledPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (schema, policies) = text.split_once('\0').unwrap_or(("", text));
    let _ = CompiledPolicy::compile(&PolicyBundle {
        schema: schema.to_owned(),
        policies: policies.to_owned(),
    });
});
