//! A hostile day (issue #13), against the real binary: input that once crashed or
//! misled the server. One test per item; each fails on the server before its fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use common::{ADMIN_KEY, SCHEMA, Server};
use serde_json::json;

/// A small policy or schema nesting brackets thousands deep used to overflow the stack in
/// validate and push and kill the process. It is refused before parsing, and the server
/// goes on answering.
#[test]
fn deeply_nested_policies_and_schemas_are_refused_not_fatal() {
    let server = Server::start();
    let deep = 5_000;
    let nested_policy = |open: &str, close: &str| {
        format!(
            "permit (principal, action == Action::\"ping\", resource) when {{ {}1{} == 1 }};",
            open.repeat(deep),
            close.repeat(deep)
        )
    };
    let bundles = [
        (SCHEMA.to_owned(), nested_policy("(", ")")),
        (SCHEMA.to_owned(), nested_policy("[", "]")),
        (
            format!("{SCHEMA}\ntype Deep = {}Long{};", "Set<".repeat(deep), ">".repeat(deep)),
            String::new(),
        ),
    ];
    for (schema, policies) in bundles {
        for path in ["/v1/policies/validate", "/v1/policies"] {
            let (status, body) = server.post(path, Some(ADMIN_KEY), &json!({"schema": schema, "policies": policies}));
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("policy_invalid")),
                "{path}: {body}"
            );
            assert!(
                body["error"]["message"].as_str().unwrap().contains("more than 24 deep"),
                "{body}"
            );
        }
        let (status, _) = server.call("GET", "/livez", None, None);
        assert_eq!(status, 200, "the server must still be alive");
    }
}

/// About 50 bad keys from one address used to make every request from it 429 for 60 s,
/// admin and agents included, with no `Retry-After`. Now only the bad keys are slowed.
#[test]
fn a_flood_of_bad_keys_does_not_lock_out_good_ones() {
    let server = Server::start();
    let agent = server.agent("bot");
    let http = reqwest::blocking::Client::new();
    let mut last = None;
    for _ in 0..80 {
        let res = http
            .get(format!("{}/v1/whoami", server.url))
            .bearer_auth("clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .send()
            .unwrap();
        last = Some((res.status().as_u16(), res.headers().get("retry-after").cloned()));
    }
    let (status, retry_after) = last.unwrap();
    assert_eq!(status, 429);
    let seconds: u64 = retry_after
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    for key in [ADMIN_KEY, agent.as_str()] {
        let (status, body) = server.call("GET", "/v1/whoami", Some(key), None);
        assert_eq!(status, 200, "{body}");
    }
}
