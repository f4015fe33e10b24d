//! The agent's two calls to the server (SPEC §6): enroll and sync. Every
//! answer, including none at all, becomes an outcome the machine understands.

use std::time::Duration;

use serde_json::{Value, json};

use crate::lkg::Enrollment;
use crate::machine::{Backoff, Event, Policy};

/// The answer to one sync.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// A new policy.
    Policy(Policy),
    /// The policy held is current (304).
    Unchanged,
    /// The device's token was revoked (401).
    Revoked,
    /// The server is overloaded (429 or 503); with `Retry-After`, the wait it asked for.
    Busy {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` it sent, in milliseconds (at most an hour), if any.
        retry_after_ms: Option<u64>,
    },
    /// Down, slow, or garbage.
    Failed(String),
}

/// The longest `Retry-After` the agent honours: a server that asks for more
/// is asked again after an hour.
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// A `Retry-After` value (delta-seconds, or an HTTP date compared with `now`)
/// in milliseconds, capped at [`MAX_RETRY_AFTER_MS`]; `None` when unreadable.
pub fn retry_after_ms(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    let ms = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are "a very long time".
        value
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            .saturating_mul(1000)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        // A date in the past means "now".
        at.duration_since(now).map_or(0, |wait| {
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
        })
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

impl SyncOutcome {
    /// The machine event for this outcome.
    pub fn event(self, manual: bool) -> Event {
        match self {
            SyncOutcome::Policy(policy) => Event::PolicyReceived { policy, manual },
            SyncOutcome::Unchanged => Event::PolicyUnchanged,
            SyncOutcome::Revoked => Event::Revoked,
            SyncOutcome::Busy {
                status,
                retry_after_ms: Some(retry_after_ms),
            } => Event::ServerBusy {
                retry_after_ms,
                detail: format!(
                    "the server is busy (HTTP {status}); it asked to wait {} s",
                    retry_after_ms.div_ceil(1000)
                ),
            },
            // Without Retry-After: the usual backoff.
            SyncOutcome::Busy {
                status,
                retry_after_ms: None,
            } => Event::TransportError {
                detail: format!("the server is busy (HTTP {status})"),
            },
            SyncOutcome::Failed(detail) => Event::TransportError { detail },
        }
    }
}

/// One sync with the server; never fails, every problem is an outcome.
/// `wait_s` above 0 makes it a long-poll; the server then has `wait_s` plus
/// `timeout` to answer.
pub async fn sync_once(
    client: &reqwest::Client,
    enrollment: &Enrollment,
    report: &Value,
    etag: Option<&str>,
    wait_s: u64,
    timeout: Duration,
) -> SyncOutcome {
    let server = &enrollment.server;
    let url = if wait_s > 0 {
        format!("{server}/agent/v1/sync?wait={wait_s}")
    } else {
        format!("{server}/agent/v1/sync")
    };
    let mut request = client
        .post(url)
        .bearer_auth(&enrollment.device_token)
        .json(report)
        .timeout(Duration::from_secs(wait_s).saturating_add(timeout));
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    let response = match request.send().await {
        Ok(response) => response,
        // TLS failures say which and how to fix them; the machine treats them
        // like any transport error (the last-known-good policy stays).
        Err(error) => return SyncOutcome::Failed(crate::transport::describe(&error)),
    };
    match response.status().as_u16() {
        304 => SyncOutcome::Unchanged,
        401 => SyncOutcome::Revoked,
        200 => match response.text().await {
            Ok(text) => match serde_json::from_str::<Policy>(&text) {
                Ok(policy) => SyncOutcome::Policy(policy),
                Err(error) => SyncOutcome::Failed(format!(
                    "the server answered something that is not a policy ({error})"
                )),
            },
            Err(error) => SyncOutcome::Failed(format!("the answer was cut off: {error}")),
        },
        status @ (429 | 503) => SyncOutcome::Busy {
            status,
            retry_after_ms: response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after_ms(v, std::time::SystemTime::now())),
        },
        status => SyncOutcome::Failed(format!("the server answered {status}")),
    }
}

/// Why a device could not enroll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// The server refused for good (a 4xx other than 429): asking again gives the same answer.
    #[error("the server refused the enrollment ({code}, HTTP {status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error code of the answer, e.g. `user_not_provisioned`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server was down, slow, or answered garbage; asking again may work.
    #[error("enrollment failed: {0}")]
    Unavailable(String),
}

impl EnrollError {
    /// Whether asking again may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, EnrollError::Unavailable(_))
    }
}

/// What a device needs to enroll.
#[derive(Debug, Clone, Copy)]
pub struct EnrollRequest<'a> {
    /// The server's base URL.
    pub server: &'a str,
    /// The tenant's enrollment key.
    pub enrollment_key: &'a str,
    /// The user's login name.
    pub user_name: &'a str,
    /// What the device reports.
    pub report: &'a Value,
}

/// Enrolls a device once.
pub async fn enroll(
    client: &reqwest::Client,
    request: EnrollRequest<'_>,
    timeout: Duration,
) -> Result<(Enrollment, Policy), EnrollError> {
    let body = json!({"enrollment_key": request.enrollment_key, "user_name": request.user_name, "device": request.report});
    let response = client
        .post(format!("{}/agent/v1/enroll", request.server))
        .json(&body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|error| EnrollError::Unavailable(crate::transport::describe(&error)))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    // 429 means "later", not "never": it is retried like a server error.
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        let error = &parsed["error"];
        return Err(EnrollError::Refused {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            message: error["message"]
                .as_str()
                .map_or_else(|| format!("the server answered {status}"), str::to_owned),
        });
    }
    if !status.is_success() {
        return Err(EnrollError::Unavailable(format!(
            "the server answered {status}"
        )));
    }
    let policy: Policy = serde_json::from_value(parsed["policy"].clone()).map_err(|error| {
        EnrollError::Unavailable(format!("the enrollment answer is not understood: {error}"))
    })?;
    let (Some(device_id), Some(device_token)) = (
        parsed["device_id"].as_str().filter(|v| !v.is_empty()),
        parsed["device_token"].as_str().filter(|v| !v.is_empty()),
    ) else {
        return Err(EnrollError::Unavailable(
            "the enrollment answer has no device id or token".to_owned(),
        ));
    };
    let enrollment = Enrollment {
        server: request.server.to_owned(),
        tenant: policy.tenant.clone(),
        device_id: device_id.to_owned(),
        device_token: device_token.to_owned(),
    };
    Ok((enrollment, policy))
}

/// Enrolls a device, retrying transient failures with `backoff` (and jitter),
/// at most `attempts` times in all (`None`: until it works or is refused).
/// `on_retry` hears each failure and the wait before the next attempt.
pub async fn enroll_retrying(
    client: &reqwest::Client,
    request: EnrollRequest<'_>,
    timeout: Duration,
    backoff: Backoff,
    attempts: Option<u32>,
    mut on_retry: impl FnMut(&EnrollError, Duration),
) -> Result<(Enrollment, Policy), EnrollError> {
    let mut failures = 0u32;
    loop {
        match enroll(client, request, timeout).await {
            Ok(enrolled) => return Ok(enrolled),
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => {
                failures = failures.saturating_add(1);
                if attempts.is_some_and(|most| failures >= most) {
                    return Err(error);
                }
                let wait =
                    Duration::from_millis(backoff.delay_ms(failures, crate::runtime::jitter()));
                on_retry(&error, wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_bounded() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_ms("7", now), Some(7_000));
        assert_eq!(retry_after_ms(" 0 ", now), Some(0));
        assert_eq!(retry_after_ms("86400", now), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(
            retry_after_ms("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER_MS)
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after_ms(&later, now), Some(30_000));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after_ms(&earlier, now), Some(0));
        for unreadable in ["", "-5", "1.5", "soon", "Mon, 99 Foo 2026"] {
            assert_eq!(retry_after_ms(unreadable, now), None, "{unreadable:?}");
        }
        let _ = SystemTime::now();
    }

    #[test]
    fn a_busy_answer_with_retry_after_is_its_own_event() {
        let busy = SyncOutcome::Busy {
            status: 503,
            retry_after_ms: Some(4_000),
        };
        assert!(matches!(
            busy.event(false),
            Event::ServerBusy {
                retry_after_ms: 4_000,
                ..
            }
        ));
        let bare = SyncOutcome::Busy {
            status: 429,
            retry_after_ms: None,
        };
        assert!(matches!(bare.event(false), Event::TransportError { .. }));
    }
}
