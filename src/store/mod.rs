//! # The store
//!
//! Everything a search must not lose, behind the [`Store`] trait: run manifests, each run's
//! append-only trial journal, the content-addressed evaluation cache shared by all runs, strategy
//! snapshots and sensitivity analyses. [`SledStore`] is the embedded backend (one sled database per
//! folder). Nothing outside this module knows the store is sled.

mod records;

pub use records::*;
