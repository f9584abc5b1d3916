#![doc = include_str!("../README.md")]

mod sequencer;
mod sqlite;

pub use sqlite::{SqliteStore, StoreOptions};

#[cfg(test)]
mod tests;
