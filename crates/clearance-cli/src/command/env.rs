//! `clearance env ...`: the environment registry, and attestation from an environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use clearance_artifact::Signer as _;
use clearance_enforce::Measurer;
use clearance_model::environment::{
    AttestRequest, AttestationEvidence, AttestationView, Challenge, EnvironmentList, EnvironmentView, Measurements,
    Quarantined, RegisterEnvironment, UpdateEnvironment,
};
use clearance_model::execution::RevokeRequest;
use clearance_model::{Digest, Timestamp};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Manage environments (admin key), or attest one (enforcer key, run on the environment).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Register an environment: its attestation key and the measurements expected of it.
    Register {
        /// The new environment's id (letters, digits, `.`, `_`, `-`): what requests name
        /// as their target and clearances carry as their audience.
        id: String,
        /// The environment's Ed25519 public key, base64url (see `clearance env keygen`).
        /// Base64url may start with `-`, so the value is taken as is.
        #[arg(long, allow_hyphen_values = true)]
        attestation_key: String,
        /// An expected measurement, NAME=sha256:HEX (repeatable).
        #[arg(long = "expect", value_name = "NAME=DIGEST", required = true)]
        expect: Vec<String>,
        /// A label, KEY=VALUE (repeatable); policies see them as `context.environment.labels`.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List environments.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one environment and its latest attestation.
    Show {
        /// The environment's id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace an environment's expectations and/or labels.
    Update {
        /// The environment's id.
        id: String,
        /// The expected measurements, NAME=sha256:HEX (repeatable), replacing all of them.
        #[arg(long = "expect", value_name = "NAME=DIGEST")]
        expect: Vec<String>,
        /// The labels, KEY=VALUE (repeatable), replacing all of them.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Quarantine: deny new requests and revoke the executions running there.
    Quarantine {
        /// The environment's id.
        id: String,
        /// Why (recorded in the log and sent to enforcement points with the revocations).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lift a quarantine (the environment must attest again).
    Release {
        /// The environment's id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create an attestation key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        /// Where to write the private key (kept if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// From the environment: fetch a challenge, measure, sign and submit the evidence.
    /// Exit code 4 if the measurements do not match the registered expectations (the
    /// evidence is recorded all the same).
    Attest {
        /// The environment's id.
        #[arg(long)]
        id: String,
        /// The attestation private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// A file to measure, NAME=PATH (repeatable).
        #[arg(long = "measure", value_name = "NAME=PATH")]
        measure: Vec<String>,
        /// A declared measurement, NAME=sha256:HEX (repeatable).
        #[arg(long = "measure-value", value_name = "NAME=DIGEST")]
        measure_value: Vec<String>,
        /// Attest again every this many seconds, until stopped.
        #[arg(long, value_name = "SECONDS")]
        every: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn pairs(flag: &str, specs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (k, v) = spec
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::Error(anyhow::anyhow!("{flag} `{spec}` is not NAME=VALUE")))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(Failure::Error(anyhow::anyhow!("{flag} `{k}` is given twice")));
        }
    }
    Ok(out)
}

fn digests(specs: &[String]) -> Result<Measurements, Failure> {
    pairs("--expect", specs)?
        .into_iter()
        .map(|(k, v)| {
            v.parse::<Digest>()
                .map(|d| (k.clone(), d))
                .map_err(|_| Failure::Error(anyhow::anyhow!("--expect `{k}`: not sha256:<64 hex digits>")))
        })
        .collect()
}

fn print_env(e: &EnvironmentView) {
    let state = if e.quarantined { "quarantined" } else { "active" };
    println!("{}  {state}", e.id);
    for (k, v) in &e.labels {
        println!("  label     {k}={v}");
    }
    for (k, v) in &e.expect {
        println!("  expect    {k} {v}");
    }
    match &e.attestation {
        Some(a) => {
            let verdict = if a.matches {
                "matches".to_owned()
            } else {
                format!("MISMATCH ({})", a.mismatched.join(", "))
            };
            println!(
                "  attested  {} {verdict}, fresh until {} (log index {})",
                Timestamp(a.time),
                Timestamp(a.fresh_until),
                a.log_index
            );
            if a.fresh_until <= Timestamp::now().seconds() {
                println!(
                    "  STALE     requests for it are denied (attestation_stale) until it attests again: \
                     clearance env attest --id {} ... (add --every to keep it fresh)",
                    e.id
                );
            }
        }
        None => println!(
            "  attested  never: requests for it are denied until it attests (clearance env attest --id {} ...)",
            e.id
        ),
    }
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Register {
            id,
            attestation_key,
            expect,
            labels,
            client,
        } => {
            let req = RegisterEnvironment {
                id,
                attestation_key,
                expect: digests(&expect)?,
                labels: pairs("--label", &labels)?,
            };
            let env: EnvironmentView = Client::new(&client)?.post("/v1/environments", &req).await?;
            if client.json {
                return print_json(&env);
            }
            print_env(&env);
            Ok(())
        }
        Command::List { client } => {
            let list: EnvironmentList = Client::new(&client)?.get("/v1/environments").await?;
            if client.json {
                return print_json(&list);
            }
            list.environments.iter().for_each(print_env);
            Ok(())
        }
        Command::Show { id, client } => {
            let env: EnvironmentView = Client::new(&client)?.get(&format!("/v1/environments/{id}")).await?;
            if client.json {
                return print_json(&env);
            }
            print_env(&env);
            Ok(())
        }
        Command::Update {
            id,
            expect,
            labels,
            client,
        } => {
            let req = UpdateEnvironment {
                expect: (!expect.is_empty()).then(|| digests(&expect)).transpose()?,
                labels: (!labels.is_empty()).then(|| pairs("--label", &labels)).transpose()?,
            };
            let env: EnvironmentView = Client::new(&client)?
                .patch(&format!("/v1/environments/{id}"), &req)
                .await?;
            if client.json {
                return print_json(&env);
            }
            print_env(&env);
            Ok(())
        }
        Command::Quarantine { id, reason, client } => {
            let q: Quarantined = Client::new(&client)?
                .post(&format!("/v1/environments/{id}/quarantine"), &RevokeRequest { reason })
                .await?;
            if client.json {
                return print_json(&q);
            }
            println!("quarantined {id}: {} live executions revoked", q.revoked_executions);
            Ok(())
        }
        Command::Release { id, client } => {
            let q: Quarantined = Client::new(&client)?
                .post(&format!("/v1/environments/{id}/release"), &serde_json::json!({}))
                .await?;
            if client.json {
                return print_json(&q);
            }
            println!("released {id}: it must attest again before it is used");
            Ok(())
        }
        Command::Keygen { out } => {
            let (key, created) = clearance_artifact::load_or_create_key(&out)
                .with_context(|| format!("attestation key `{}`", out.display()))?;
            if created {
                eprintln!("created {} (mode 0600)", out.display());
            }
            println!("{}", URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()));
            Ok(())
        }
        Command::Attest {
            id,
            key,
            measure,
            measure_value,
            every,
            client,
        } => {
            let key =
                clearance_artifact::load_key(&key).with_context(|| format!("attestation key `{}`", key.display()))?;
            let measurer = Measurer::new(&measure, &measure_value).map_err(|e| Failure::Error(anyhow::anyhow!(e)))?;
            if measurer.is_empty() {
                return Err(Failure::Error(anyhow::anyhow!(
                    "nothing to measure: give --measure NAME=PATH or --measure-value NAME=DIGEST"
                )));
            }
            let c = Client::new(&client)?;
            loop {
                let result = attest_once(&c, &id, &key, &measurer).await;
                match (&result, every) {
                    (Ok(a), _) if client.json => print_json(a)?,
                    (Ok(a), _) => {
                        let verdict = if a.matches {
                            "matches its expectations".to_owned()
                        } else {
                            format!("does NOT match: {}", a.mismatched.join(", "))
                        };
                        println!(
                            "attested {id} ({}): {verdict}; fresh until {} (log index {})",
                            a.measurement_digest,
                            Timestamp(a.fresh_until),
                            a.log_index
                        );
                    }
                    (Err(e), Some(_)) => eprintln!("error: attestation failed, retrying: {e:?}"),
                    (Err(_), None) => {}
                }
                match every {
                    // Evidence that does not match is recorded, but the environment is not
                    // trusted: that is a failed attestation, with its own exit code.
                    None => {
                        return match result {
                            Ok(a) if !a.matches => Err(Failure::Rejected(format!(
                                "{id} does not match its expectations ({}): requests for it are denied \
                                 (measurement_mismatch) until it attests what `clearance env update --expect` \
                                 names",
                                a.mismatched.join(", ")
                            ))),
                            other => other.map(|_| ()),
                        };
                    }
                    Some(s) => tokio::time::sleep(Duration::from_secs(s.max(1))).await,
                }
            }
        }
    }
}

async fn attest_once(
    c: &Client,
    id: &str,
    key: &clearance_artifact::SigningKey,
    measurer: &Measurer,
) -> Result<AttestationView, Failure> {
    let challenge: Challenge = c
        .post(&format!("/v1/environments/{id}/challenge"), &serde_json::json!({}))
        .await?;
    let evidence = AttestationEvidence {
        environment: id.to_owned(),
        measurements: measurer.measure().map_err(|e| Failure::Error(anyhow::anyhow!(e)))?,
        time: Timestamp::now().seconds(),
        challenge: challenge.challenge,
    };
    let bytes = evidence.signed_bytes().map_err(|e| Failure::Error(e.into()))?;
    let signature = URL_SAFE_NO_PAD.encode(key.sign(&bytes).to_bytes());
    c.post(
        &format!("/v1/environments/{id}/attest"),
        &AttestRequest { evidence, signature },
    )
    .await
}
