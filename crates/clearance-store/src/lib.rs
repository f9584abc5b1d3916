#![doc = include_str!("../README.md")]

mod audit;
mod postgres;
mod rows;
mod sequencer;
mod sql;
mod sqlite;
mod sqlite_writer;
pub mod testkit;

pub use audit::{Divergence, LogReader, LogReport, verify_log};
pub use postgres::{PgOptions, PgStore};
pub use sqlite::{SqliteStore, StoreOptions};

#[cfg(test)]
mod tests;
