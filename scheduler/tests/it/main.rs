//! Integration tests of the scheduler through its public API.

mod fairness;
mod oracle;
mod placement;
mod preemption;
mod properties;
