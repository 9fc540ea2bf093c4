//! The saga: the states one incident passes through, the compensations that undo its steps, and
//! the retry policy of a step. Plain Rust; the engine that drives sagas over gRPC builds on these.

pub mod compensation;
pub mod retry;
pub mod state;

pub use compensation::{CompensationFailure, CompensationStack};
pub use retry::{RetryPolicy, StepError, retry_step};
pub use state::{InvalidTransition, SagaEvent, SagaState};
