//! Stage 1 at the edge: the bearer key, and a limiter for repeated invalid keys.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use clearance_core::{Caller, CoreError};
use clearance_model::execution::AGENT_KEY_HEADER;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        authenticate(parts, state, presented).await.map(Self)
    }
}

/// The agent an enforcement point acts for, authenticated from [`AGENT_KEY_HEADER`]
/// exactly as a caller is from its `Authorization` header.
#[derive(Debug, Clone)]
pub struct OnBehalfOf(pub Caller);

impl FromRequestParts<AppState> for OnBehalfOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AGENT_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        authenticate(parts, state, presented).await.map(Self)
    }
}

/// Stage 1 for one presented key.
async fn authenticate(parts: &Parts, state: &AppState, presented: Option<&str>) -> Result<Caller, ApiError> {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let limiter = &state.inner.limiter;
    // A valid key always gets through: a flood of bad keys from an address (or one
    // sharing its NAT) must not lock out the good ones. Only the bad keys are slowed.
    match state.plane().authenticate(presented).await {
        Ok(caller) => Ok(caller),
        Err(CoreError::InvalidApiKey) => {
            if let Some(retry_after) = limiter.blocked(ip) {
                return Err(ApiError::RateLimited { retry_after });
            }
            state.metrics().auth_failure();
            limiter.record_failure(ip);
            tracing::info!(%ip, "invalid API key");
            Err(ApiError::Core(CoreError::InvalidApiKey))
        }
        Err(other) => Err(ApiError::Core(other)),
    }
}

/// The credentials of a `Bearer` authorization header; the scheme name is
/// case-insensitive (RFC 9110 section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Counts invalid keys per source address in fixed windows.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    window: Duration,
    max_failures: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses tracked at most; past this, expired windows are dropped first.
const MAX_TRACKED: usize = 10_000;

impl Default for FailureLimiter {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            max_failures: 50,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl FailureLimiter {
    /// While `ip` is over its budget of invalid keys: how long until its window ends.
    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.get(&ip)
            .filter(|(start, n)| start.elapsed() < self.window && *n >= self.max_failures)
            .map(|(start, _)| self.window.saturating_sub(start.elapsed()))
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_TRACKED {
            let window = self.window;
            seen.retain(|_, (start, _)| start.elapsed() < window);
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer clr_x"), Some("clr_x"));
        assert_eq!(bearer_token("bearer  clr_x "), Some("clr_x"));
        assert_eq!(bearer_token("Basic dXNlcg=="), None);
        assert_eq!(bearer_token("Bearerclr_x"), None);
    }
}
