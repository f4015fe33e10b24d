//! Guards of the sign-in form: a throttle per (email, client address) kept in
//! memory, and a small pool that runs password hashing off the async workers.
//!
//! The throttle never touches the stored account: a stranger who guesses wrong
//! from elsewhere slows down only their own (email, address) pair, never the
//! real administrator, and an email that has no account is throttled exactly
//! like one that has, so the answers say nothing about which emails exist.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Wrong passwords in a row, per (email, address), before attempts are slowed down.
pub const FREE_ATTEMPTS: u32 = 5;
/// The first wait after the free attempts; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(30);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(900);
/// A pair that has not failed for this long starts again with free attempts.
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Pairs remembered at most; the least recently failed are forgotten first,
/// so memory stays bounded whatever the number of addresses and emails.
const CAPACITY: usize = 10_000;
/// Password hashes computed at once. Each argon2 verification takes tens of
/// milliseconds of CPU and 19 MiB; a flood of sign-ins waits for a permit
/// instead of taking every core and every async worker.
const HASHING_PERMITS: usize = 2;
/// Longest email kept in a key: longer input cannot be a valid address, and
/// the bound keeps each entry small.
const MAX_KEY_EMAIL: usize = 320;

/// A fixed argon2id PHC string with the parameters of `Argon2::default()`
/// (its output was chosen, not computed, so no password matches it). It is
/// verified when the email has no account, so that an unknown email costs
/// the same work as a wrong password.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm90LWEtcmVhbC1zYWx0$RBQSRaQUYYL4hSxg3y2A2XeQoldLyQ7fqCMg3YHtQw8";

type Key = (String, Option<IpAddr>);

/// Failures of one (email, address) pair.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// The sign-in guards of one server.
pub struct SignInGuard {
    failures: Mutex<LruCache<Key, Failures>>,
    hashing: Semaphore,
}

impl Default for SignInGuard {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl SignInGuard {
    /// A guard remembering at most `capacity` (email, address) pairs.
    pub fn new(capacity: usize) -> Self {
        Self {
            failures: Mutex::new(LruCache::new(capacity.max(1))),
            hashing: Semaphore::new(HASHING_PERMITS),
        }
    }

    /// Refuses with 429 while the pair is slowed down. The answer is the same
    /// whether or not the email has an account.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let key = key(email, address);
        let mut failures = self.lock();
        let Some(entry) = failures.get(&key) else {
            return Ok(());
        };
        match entry.blocked_until {
            Some(until) if until > now => {
                let wait = (until - now).as_secs() + 1;
                Err(ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "sign_in_slowed_down",
                    format!("too many wrong sign-ins from this address; try again in {wait} s"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong email or password for the pair.
    pub fn record_failure(&self, email: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let key = key(email, address);
        let mut failures = self.lock();
        let previous = failures
            .remove(&key)
            .filter(|f| now.duration_since(f.last) < FORGET_AFTER)
            .map_or(0, |f| f.count);
        let count = previous.saturating_add(1);
        // From the fifth failure in a row, each one waits twice as long as the
        // one before, up to a quarter of an hour.
        let blocked_until = (count >= FREE_ATTEMPTS).then(|| {
            let doublings = (count - FREE_ATTEMPTS).min(5);
            now + (FIRST_WAIT * (1u32 << doublings)).min(LONGEST_WAIT)
        });
        failures.insert(
            key,
            Failures {
                count,
                last: now,
                blocked_until,
            },
        );
    }

    /// Forgets the pair's failures after a successful sign-in.
    pub fn record_success(&self, email: &str, address: Option<IpAddr>) {
        self.lock().remove(&key(email, address));
    }

    /// Whether `password` matches `stored`, computed on the blocking pool
    /// behind the hashing permits so that the async workers keep serving.
    pub async fn verify(self: &Arc<Self>, password: String, stored: String) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            // The semaphore is never closed; refusing is the safe answer anyway.
            return false;
        };
        tokio::task::spawn_blocking(move || crate::password::verify(&password, &stored))
            .await
            .unwrap_or_else(|error| {
                tracing::error!(%error, "password verification failed to run");
                false
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Key, Failures>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (each operation is one map call), so a poisoned lock is still usable.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The throttle's key: the email as an account lookup would match it
/// (trimmed, lower case, bounded) and the client address.
fn key(email: &str, address: Option<IpAddr>) -> Key {
    let normalised: String = email
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_KEY_EMAIL)
        .collect();
    (normalised, address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));
    const THERE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)));

    #[test]
    fn failures_slow_down_only_their_own_email_and_address() {
        let guard = SignInGuard::default();
        for _ in 0..FREE_ATTEMPTS - 1 {
            guard.record_failure("Admin@Acme.test ", HERE);
            assert!(guard.check("admin@acme.test", HERE).is_ok());
        }
        guard.record_failure("admin@acme.test", HERE);
        let refused = guard
            .check("ADMIN@acme.test", HERE)
            .expect_err("slowed down");
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(
            guard.check("admin@acme.test", THERE).is_ok(),
            "other address"
        );
        assert!(guard.check("other@acme.test", HERE).is_ok(), "other email");
        guard.record_success("admin@acme.test", HERE);
        assert!(guard.check("admin@acme.test", HERE).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let guard = SignInGuard::new(100);
        for i in 0..1_000 {
            guard.record_failure(&format!("user{i}@example.test"), HERE);
        }
        assert_eq!(guard.lock().len(), 100);
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        use argon2::password_hash::phc::PasswordHash;
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a valid PHC string");
        let real_hash = crate::password::hash("some long password").expect("hashed");
        let real = PasswordHash::new(&real_hash).expect("a valid PHC string");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(
            dummy.params.to_string(),
            real.params.to_string(),
            "same memory, time and parallelism"
        );
        assert!(!crate::password::verify("some long password", DUMMY_HASH));
    }
}
