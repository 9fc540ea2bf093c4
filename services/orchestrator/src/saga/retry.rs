//! Retrying a step: retryable and terminal errors are distinct, retries back off with jitter, and
//! the whole step — attempts and waits — stays under its deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How a step's failure is treated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth another attempt (a peer restarting, a timeout, contention).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Another attempt cannot help (bad input, a rejected candidate, a stale fencing token).
    #[error("terminal: {0}")]
    Terminal(String),
    /// The step's deadline passed; carries the last error seen.
    #[error("deadline of {deadline:?} exceeded after {attempts} attempts; last error: {last}")]
    DeadlineExceeded {
        deadline: Duration,
        attempts: u32,
        last: String,
    },
}

impl StepError {
    /// The one list of gRPC codes worth retrying; everything else is terminal.
    pub fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unknown => Self::Retryable(message),
            _ => Self::Terminal(message),
        }
    }
}

/// Backoff and deadline of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    pub max_attempts: u32,
    /// Bound on the whole step, attempts and waits included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            max_attempts: 5,
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` ("full jitter": uniform in [0, capped exponential]).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let ceiling = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let ceiling = ceiling.min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(ceiling * fastrand::f64())
    }
}

/// Runs `attempt(n)` (n from 1) until it succeeds, fails terminally, runs out of attempts, or the
/// deadline passes. Each attempt is given the time left as its own deadline.
pub async fn retry_step<T, F, Fut>(
    policy: RetryPolicy,
    mut attempt: F,
) -> Result<(T, u32), StepError>
where
    F: FnMut(u32, Duration) -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let deadline = Instant::now() + policy.deadline;
    let mut last = String::from("no attempt finished");
    for number in 1..=policy.max_attempts.max(1) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StepError::DeadlineExceeded {
                deadline: policy.deadline,
                attempts: number - 1,
                last,
            });
        }
        match tokio::time::timeout(left, attempt(number, left)).await {
            Ok(Ok(value)) => return Ok((value, number)),
            Ok(Err(StepError::Retryable(message))) => last = message,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(StepError::DeadlineExceeded {
                    deadline: policy.deadline,
                    attempts: number,
                    last: "attempt still running at the deadline".into(),
                });
            }
        }
        if number < policy.max_attempts {
            let wait = policy
                .backoff(number)
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
        }
    }
    Err(StepError::Retryable(format!(
        "gave up after {} attempts; last error: {last}",
        policy.max_attempts
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            deadline: Duration::from_secs(60),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_until_success() {
        let (value, attempts) = retry_step(policy(), |n, _| async move {
            if n < 3 {
                Err(StepError::Retryable("unavailable".into()))
            } else {
                Ok(n * 10)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, attempts), (30, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_first_terminal_error() {
        let mut calls = 0;
        let error = retry_step(policy(), |_, _| {
            calls += 1;
            async { Err::<(), _>(StepError::Terminal("stale fencing token".into())) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(error, StepError::Terminal("stale fencing token".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_ends_at_the_step_deadline() {
        let policy = RetryPolicy {
            deadline: Duration::from_secs(3),
            ..policy()
        };
        let started = Instant::now();
        let error = retry_step(policy, |_, _| {
            std::future::pending::<Result<(), StepError>>()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(error, StepError::DeadlineExceeded { .. }),
            "{error}"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "virtual clock: exactly the deadline"
        );
    }

    #[test]
    fn backoff_is_jittered_under_a_capped_exponential() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            let wait = policy.backoff(attempt);
            assert!(wait <= policy.max_backoff);
        }
    }

    #[test]
    fn only_transient_grpc_codes_are_retryable() {
        assert!(matches!(
            StepError::from_status(&tonic::Status::unavailable("x")),
            StepError::Retryable(_)
        ));
        assert!(matches!(
            StepError::from_status(&tonic::Status::failed_precondition("x")),
            StepError::Terminal(_)
        ));
        assert!(matches!(
            StepError::from_status(&tonic::Status::invalid_argument("x")),
            StepError::Terminal(_)
        ));
    }
}
