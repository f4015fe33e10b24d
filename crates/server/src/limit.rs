//! Limits at the edge: who the client is behind a trusted proxy, how often an
//! address may fail to authenticate or enroll, and how many body bytes may be
//! in flight at once.
//!
//! The failure limiter is hand-written rather than a general rate-limiting
//! crate because only failures count, and only against callers whose own
//! credential fails: a valid credential is never refused because others at the
//! same address guessed wrong.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Failed authentications allowed per address and window.
pub const MAX_FAILURES: u32 = 20;
/// The window of both limiters.
const WINDOW: Duration = Duration::from_secs(60);
/// Keys remembered at most per limiter; the oldest window is forgotten past this.
const MAX_TRACKED: usize = 16_384;
/// Shards of a limiter, each with its own lock, so that no caller waits on a
/// lock held over the whole map.
const SHARDS: usize = 16;

/// Counts events per key in fixed one-minute windows, in bounded memory.
pub struct WindowCounter<K> {
    shards: Vec<Mutex<Shard<K>>>,
}

/// One shard: the counts, and their keys in the order they were first seen,
/// so that a full shard forgets its oldest key in constant time.
struct Shard<K> {
    counts: HashMap<K, (Instant, u32)>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone> Default for WindowCounter<K> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        counts: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
        }
    }
}

impl<K: Hash + Eq + Clone> WindowCounter<K> {
    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, Shard<K>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        // The modulo keeps the index in range whatever the hash.
        let index = (hasher.finish() as usize) % self.shards.len();
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one event for `key` and returns the count in its window.
    pub fn add(&self, key: &K) -> u32 {
        let mut shard = self.shard(key);
        if !shard.counts.contains_key(key) {
            if shard.counts.len() >= MAX_TRACKED / SHARDS
                && let Some(oldest) = shard.order.pop_front()
            {
                shard.counts.remove(&oldest);
            }
            shard.order.push_back(key.clone());
        }
        let entry = shard
            .counts
            .entry(key.clone())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }

    /// Seconds until the window of `key` ends.
    fn retry_after(&self, key: &K) -> u64 {
        self.shard(key).counts.get(key).map_or(1, |(started, _)| {
            WINDOW.saturating_sub(started.elapsed()).as_secs() + 1
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).counts.len())
            .sum()
    }
}

/// Counts failed authentications per client address.
#[derive(Default)]
pub struct FailureLimiter {
    failures: WindowCounter<IpAddr>,
}

impl FailureLimiter {
    /// Counts a failed authentication.
    pub fn record_failure(&self, address: Option<IpAddr>) {
        if let Some(address) = address {
            self.failures.add(&address);
        }
    }

    /// Counts a failed authentication and returns what to answer it: `error`,
    /// or 429 once the address has failed too often. Called only after the
    /// caller's own credential was checked and found wrong, so that a valid
    /// credential from a busy address always passes.
    pub fn fail(&self, address: Option<IpAddr>, error: ApiError) -> ApiError {
        let Some(address) = address else {
            return error;
        };
        if self.failures.add(&address) > MAX_FAILURES {
            self.limited(&address)
        } else {
            error
        }
    }

    fn limited(&self, address: &IpAddr) -> ApiError {
        let wait = self.failures.retry_after(address);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed attempts from this address; try again in {wait} s"),
        )
    }
}

/// Enrollments per (enrollment key, address): generous, so a fleet behind one
/// NAT address enrolls, yet a leaked key cannot mint devices without bound.
pub struct EnrollLimiter {
    per_minute: u32,
    attempts: WindowCounter<(String, IpAddr)>,
}

impl EnrollLimiter {
    /// A limiter allowing `per_minute` enrollments per key and address.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            attempts: WindowCounter::default(),
        }
    }

    /// Counts an enrollment with a valid key (hashed) and refuses it past the limit.
    pub fn admit(&self, key_hash: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(address) = address else {
            return Ok(());
        };
        let key = (key_hash.to_owned(), address);
        if self.attempts.add(&key) > self.per_minute {
            let wait = self.attempts.retry_after(&key);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many enrollments with this key from this address; try again in {wait} s"
                ),
            ));
        }
        Ok(())
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in these networks.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Parses a `--trusted-proxy` value: a CIDR, or one address.
    pub fn parse_network(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{text:?} is not an address or a CIDR network such as 10.0.0.0/8"))
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy;
    /// then the rightmost `X-Forwarded-For` address that is not itself a
    /// trusted proxy (or, without that header, the `Forwarded: for=` one).
    /// Addresses left of the first untrusted one may be forged by the client
    /// and are never read.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        x_forwarded_for: impl Iterator<Item = &'a [u8]>,
        forwarded: impl Iterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let from_xff: Vec<IpAddr> = x_forwarded_for
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(','))
            .filter_map(|item| parse_node(item.trim()))
            .collect();
        let hops = if from_xff.is_empty() {
            forwarded
                .filter_map(|value| std::str::from_utf8(value).ok())
                .flat_map(|value| value.split(','))
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_node(value.trim().trim_matches('"')))
                            .flatten()
                    })
                })
                .collect()
        } else {
            from_xff
        };
        hops.into_iter()
            .rev()
            .map(canonical)
            .find(|hop| !self.trusts(*hop))
            .unwrap_or(peer)
    }
}

/// An IPv4 address seen through an IPv6 socket is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One node of a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80` or `::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|socket| socket.ip())
}

/// A budget of request-body bytes held in memory at once, over every connection.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// How long a request waits for body budget before it is answered 503.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Reserves `bytes` (at most the whole budget) for a body about to be read,
    /// waiting a little for others to finish; 503 when the server stays full.
    pub async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let wanted = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        let acquired =
            tokio::time::timeout(BUDGET_WAIT, self.bytes.clone().acquire_many_owned(wanted)).await;
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "the server is reading too many request bodies at once; try again shortly",
            )),
        }
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
        let wrong = || ApiError::unauthorized("no");
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                limiter.fail(guesser, wrong()).status(),
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            limiter.fail(guesser, wrong()).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            limiter.fail(guesser, wrong()).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            limiter.fail(other, wrong()).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            limiter.fail(None, wrong()).status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let counter = WindowCounter::<u32>::default();
        for key in 0..100_000u32 {
            counter.add(&key);
        }
        assert!(counter.tracked() <= MAX_TRACKED, "{}", counter.tracked());
    }

    #[test]
    fn enrollments_are_limited_per_key_and_address() {
        let limiter = EnrollLimiter::new(2);
        let address = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(limiter.admit("k", address).is_ok());
        assert!(limiter.admit("k", address).is_ok());
        assert!(limiter.admit("k", address).is_err());
        assert!(limiter.admit("other", address).is_ok());
        assert!(
            limiter
                .admit("k", Some(IpAddr::from([10, 0, 0, 2])))
                .is_ok()
        );
    }

    fn client(proxies: &[&str], peer: &str, xff: &[&str], forwarded: &[&str]) -> String {
        let proxies = TrustedProxies::new(
            proxies
                .iter()
                .map(|p| TrustedProxies::parse_network(p).expect("network"))
                .collect(),
        );
        proxies
            .client(
                peer.parse().expect("peer"),
                xff.iter().map(|v| v.as_bytes()),
                forwarded.iter().map(|v| v.as_bytes()),
            )
            .to_string()
    }

    #[test]
    fn forwarding_headers_are_read_only_from_trusted_proxies() {
        let lb = ["10.0.0.0/8"];
        // An untrusted peer's headers are ignored.
        assert_eq!(client(&lb, "203.0.113.9", &["1.1.1.1"], &[]), "203.0.113.9");
        assert_eq!(client(&[], "10.0.0.1", &["1.1.1.1"], &[]), "10.0.0.1");
        // The rightmost untrusted hop is the client; what it claims to its left is not read.
        assert_eq!(
            client(&lb, "10.0.0.1", &["6.6.6.6, 198.51.100.7, 10.0.0.2"], &[]),
            "198.51.100.7"
        );
        assert_eq!(
            client(&lb, "10.0.0.1", &["6.6.6.6", "198.51.100.7"], &[]),
            "198.51.100.7"
        );
        assert_eq!(
            client(
                &lb,
                "10.0.0.1",
                &[],
                &["for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https"]
            ),
            "2001:db8::1"
        );
        // A trusted peer without usable headers is itself the client.
        assert_eq!(client(&lb, "10.0.0.1", &["garbage"], &[]), "10.0.0.1");
        assert_eq!(
            client(&["10.0.0.1"], "::ffff:10.0.0.1", &["192.0.2.1:443"], &[]),
            "192.0.2.1"
        );
    }
}
