#![doc = include_str!("../README.md")]

mod audit;
mod environments;
mod executions;
mod sequencer;
mod sqlite;

pub use audit::{Divergence, LogReport, log_origin, verify_log};
pub use sqlite::{SqliteStore, StoreOptions};

#[cfg(test)]
mod tests;
