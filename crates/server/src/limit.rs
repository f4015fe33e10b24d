//! Slows down guessing: a client address that fails authentication too often
//! in a minute gets 429 until the minute is over.
//!
//! Hand-written rather than a general rate-limiting crate because only failures
//! count: a fleet of agents enrolling from one NAT address must never be limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::error::ApiError;

/// Failed authentications allowed per address and window.
const MAX_FAILURES: u32 = 20;
/// The window.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; expired ones are dropped past this.
const MAX_TRACKED: usize = 10_000;

/// Counts failed authentications per client address.
#[derive(Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// Refuses an address that failed too often in the current window.
    pub fn check(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(address) = address else {
            return Ok(());
        };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&address) {
            Some((started, count)) if *count >= MAX_FAILURES && started.elapsed() < WINDOW => {
                let wait = WINDOW.saturating_sub(started.elapsed()).as_secs() + 1;
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many failed attempts from this address; try again in {wait} s"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication.
    pub fn record_failure(&self, address: Option<IpAddr>) {
        let Some(address) = address else { return };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (started, _)| started.elapsed() < WINDOW);
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_repeated_failures_are_limited() {
        let limiter = FailureLimiter::default();
        let guesser = Some(IpAddr::from([10, 0, 0, 1]));
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(guesser).is_ok());
            limiter.record_failure(guesser);
        }
        let refused = limiter.check(guesser).map_err(|e| e.status());
        assert_eq!(refused, Err(StatusCode::TOO_MANY_REQUESTS));
        assert!(limiter.check(other).is_ok());
        assert!(limiter.check(None).is_ok());
    }
}
