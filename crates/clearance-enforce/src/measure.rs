//! What an environment measures about itself: files (hashed each time) and declared
//! values (such as a container image digest). The same set builds attestation evidence
//! and is recomputed by enforcement points before each execution.

use std::path::PathBuf;

use clearance_model::Digest;
use clearance_model::environment::{Measurements, measurement_digest};

use clearance_verify::VerifyError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// SHA-256 of the file's bytes, read at measurement time.
    File(PathBuf),
    /// A digest given as is (`sha256:<hex>`).
    Value(Digest),
}

/// A named set of measurement sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurer {
    sources: Vec<(String, Source)>,
}

impl Measurer {
    /// From `NAME=PATH` files and `NAME=sha256:HEX` values. Names must be unique.
    pub fn new(files: &[String], values: &[String]) -> Result<Self, String> {
        let mut sources = Vec::new();
        for spec in files {
            let (name, path) = split(spec, "--measure")?;
            sources.push((name, Source::File(PathBuf::from(path))));
        }
        for spec in values {
            let (name, value) = split(spec, "--measure-value")?;
            let digest: Digest = value
                .parse()
                .map_err(|_| format!("--measure-value `{spec}`: the value must be sha256:<64 hex digits>"))?;
            sources.push((name, Source::Value(digest)));
        }
        let mut names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("measurement `{}` is given twice", w[0]));
        }
        Ok(Self { sources })
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Measure now. A file that cannot be read is an error, never a skipped entry.
    pub fn measure(&self) -> Result<Measurements, String> {
        self.sources
            .iter()
            .map(|(name, source)| {
                let digest = match source {
                    Source::Value(d) => *d,
                    Source::File(path) => Digest::of(
                        &std::fs::read(path).map_err(|e| format!("measuring `{name}` ({}): {e}", path.display()))?,
                    ),
                };
                Ok((name.clone(), digest))
            })
            .collect()
    }

    /// Check a clearance's `env` binding against what is measured here, now.
    pub fn check(&self, claims: &clearance_model::ClearanceClaims) -> Result<(), VerifyError> {
        let measured = self.measure().map_err(VerifyError::MeasurementMismatch)?;
        let here = measurement_digest(&measured).map_err(|e| VerifyError::MeasurementMismatch(e.to_string()))?;
        match &claims.env {
            Some(env) if env.measurements == here => Ok(()),
            Some(env) => Err(VerifyError::MeasurementMismatch(format!(
                "the clearance is for measurements {} of `{}`, but this environment measures {here}",
                env.measurements, env.id
            ))),
            None => Err(VerifyError::MeasurementMismatch(
                "the clearance binds no environment measurements, and this enforcement point requires them".into(),
            )),
        }
    }
}

fn split(spec: &str, flag: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((name, rest)) if !name.is_empty() && !rest.is_empty() => Ok((name.to_owned(), rest.to_owned())),
        _ => Err(format!("{flag} `{spec}` is not NAME=...")),
    }
}
