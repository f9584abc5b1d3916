//! `clearance verify`: check a clearance offline against a JWKS.

use anyhow::Context as _;
use clearance_artifact::Jwks;
use clearance_enforce::{ExpectedCall, Verifier, VerifyError};
use clearance_model::{ClearanceClaims, ResourceRef, Timestamp};
use serde_json::json;

use crate::client::DEFAULT_SERVER;
use crate::command::authorize::{parse_object, parse_resource};
use crate::output::{Failure, print_json};

/// Verify a clearance: signature (against the JWKS), algorithm, type, key id, issuer,
/// audience and time window; with --action and --resource, also that it authorizes
/// exactly that call (and --args). Prints the verified claims. Exit code 4 when rejected.
///
/// With `--jwks FILE` nothing is fetched: the check is offline. Without it, the JWKS is
/// fetched from --server (the only network call).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The clearance (JWS compact), or `-` to read it from standard input.
    token: String,
    /// JWKS file path or http(s) URL [default: SERVER/.well-known/jwks.json].
    #[arg(long)]
    jwks: Option<String>,
    /// Control plane URL, for the default --jwks and --issuer.
    #[arg(long, env = "CLEARANCE_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Expected issuer [default: the --server URL].
    #[arg(long, env = "CLEARANCE_ISSUER")]
    issuer: Option<String>,
    /// Trust this CA (PEM) when fetching the JWKS over `https://` from a server signed by a
    /// private CA.
    #[arg(long, env = "CLEARANCE_CA_CERT", value_name = "PEM")]
    ca_cert: Option<std::path::PathBuf>,
    /// This enforcement point's environment id; without it, only clearances bound to no
    /// environment are accepted.
    #[arg(long)]
    audience: Option<String>,
    /// The action about to run.
    #[arg(long, requires = "resource")]
    action: Option<String>,
    /// The resource as TYPE/ID.
    #[arg(long, requires = "action", value_parser = parse_resource)]
    resource: Option<ResourceRef>,
    /// The arguments about to be used, as a JSON object (with --action).
    #[arg(long, requires = "action", default_value = "{}")]
    args: String,
    /// Clock leeway in seconds.
    #[arg(long, default_value_t = clearance_model::limits::DEFAULT_LEEWAY_SECONDS)]
    leeway: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let token = if args.token == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading the clearance from stdin")?;
        s.trim().to_owned()
    } else {
        args.token.trim().to_owned()
    };
    let server = args.server.trim_end_matches('/');
    let jwks = load_jwks(
        args.jwks
            .as_deref()
            .unwrap_or(&format!("{server}/.well-known/jwks.json")),
        args.ca_cert.as_deref(),
    )
    .await?;
    let issuer = args.issuer.clone().unwrap_or_else(|| server.to_owned());
    let verifier = Verifier::new(jwks, issuer, args.audience.clone()).with_leeway(args.leeway);
    let now = Timestamp::now().seconds();
    let result: Result<ClearanceClaims, VerifyError> = match (&args.action, &args.resource) {
        (Some(action), Some(resource)) => {
            let arguments = parse_object("args", &args.args)?;
            ExpectedCall::new(action, resource, &arguments)
                .and_then(|call| verifier.verify(&token, &call, now))
                .map(|v| v.claims().clone())
        }
        _ => verifier.inspect(&token, now),
    };
    match result {
        Ok(claims) => {
            if args.json {
                print_json(&json!({"valid": true, "claims": claims}))?;
            } else {
                println!("verified: {} on {} for `{}`", claims.act, claims.res, claims.sub);
                println!("  execution  {}", claims.jti);
                println!("  arguments  {}", claims.args);
                println!("  policy     {}", claims.pol);
                println!("  log index  {}", claims.log);
                println!("  expires    {}", Timestamp(claims.exp));
                if args.action.is_none() {
                    println!("  (not checked against a call: pass --action, --resource and --args to bind it)");
                }
                if args.jwks.is_none() {
                    println!(
                        "  keys       fetched from {server}/.well-known/jwks.json (pass --jwks FILE to verify offline)"
                    );
                }
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                print_json(&json!({"valid": false, "error": {"code": e.code(), "message": e.to_string()}}))?;
            }
            Err(Failure::Rejected(format!("{}: {e}", e.code())))
        }
    }
}

async fn load_jwks(source: &str, ca_cert: Option<&std::path::Path>) -> Result<Jwks, Failure> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        let res = crate::client::trusting(builder, ca_cert)?
            .build()
            .map_err(|e| Failure::Error(e.into()))?
            .get(source)
            .send()
            .await
            .map_err(|e| Failure::Unavailable(format!("cannot fetch the JWKS from {source}: {e}")))?;
        let status = res.status();
        if !status.is_success() {
            return Err(Failure::Error(anyhow::anyhow!(
                "fetching the JWKS from {source}: HTTP {status}"
            )));
        }
        res.bytes()
            .await
            .map_err(|e| Failure::Unavailable(format!("reading the JWKS: {e}")))?
            .to_vec()
    } else {
        std::fs::read(source).with_context(|| format!("reading JWKS `{source}`"))?
    };
    Ok(serde_json::from_slice(&bytes).with_context(|| format!("`{source}` is not a JWK set"))?)
}
