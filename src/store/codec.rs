//! # Record encoding
//!
//! How a record becomes bytes and back, for any backend: compact JSON (serde_json), chosen because
//! it is self-describing. A record whose layout changed can still be probed for its `schema` field,
//! so a store written by another mpsearch version gives "written by schema 2, this reads schema 1"
//! rather than an opaque decode error; and a damaged value is an error that names the record, never a
//! panic. Decoding 10,000 trials of ~400 bytes takes ≈30 ms in a debug build, where the bare sled
//! scan takes ≈3 ms (`store_timings` in the tests prints both); release code is several times faster.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::records::{
    CachedEvaluation, MeasurementRecord, RecoveredRecord, RunManifest, SensitivityRecord, Snapshot,
    TrialRecord, SCHEMA_VERSION,
};
use crate::error::{Error, Result};

/// A stored record: it knows the schema version it carries.
pub(crate) trait Record: Serialize + DeserializeOwned {
    fn schema(&self) -> u32;
}

macro_rules! record {
    ($($t:ty),*) => {
        $(impl Record for $t {
            fn schema(&self) -> u32 {
                self.schema
            }
        })*
    };
}
record!(
    RunManifest,
    TrialRecord,
    CachedEvaluation,
    Snapshot,
    SensitivityRecord,
    MeasurementRecord,
    RecoveredRecord
);

/// Only the version of a record, whatever its other fields are.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: u32,
}

/// The bytes of `record`, described as `what` (e.g. "run `a` trial 3") in errors. A record that does
/// not carry this version's schema is refused: it would be misread by every later reader.
pub(crate) fn encode<R: Record>(location: &str, what: &str, record: &R) -> Result<Vec<u8>> {
    if record.schema() != SCHEMA_VERSION {
        return Err(Error::store(
            location,
            format!(
                "refusing to write {what} with record schema {}: this mpsearch writes schema {SCHEMA_VERSION}",
                record.schema()
            ),
        ));
    }
    serde_json::to_vec(record)
        .map_err(|e| Error::store(location, format!("cannot encode {what}: {e}")))
}

/// The record stored as `bytes`, described as `what` in errors: another schema version and an
/// undecodable value are both clear errors.
pub(crate) fn decode<R: Record>(location: &str, what: &str, bytes: &[u8]) -> Result<R> {
    match serde_json::from_slice::<R>(bytes) {
        Ok(record) if record.schema() == SCHEMA_VERSION => Ok(record),
        Ok(record) => Err(other_version(location, what, record.schema())),
        Err(e) => match serde_json::from_slice::<SchemaProbe>(bytes) {
            Ok(probe) if probe.schema != SCHEMA_VERSION => {
                Err(other_version(location, what, probe.schema))
            }
            _ => Err(Error::store(
                location,
                format!(
                    "{what} cannot be decoded ({e}); the store is damaged. Move its folder aside \
                     and pass another --store folder"
                ),
            )),
        },
    }
}

fn other_version(location: &str, what: &str, schema: u32) -> Error {
    Error::store(
        location,
        format!(
            "{what} was written by another mpsearch version (record schema {schema}; this \
             mpsearch reads schema {SCHEMA_VERSION}). Use the mpsearch that wrote it, or pass \
             another --store folder"
        ),
    )
}

/// How errors name trial `number` of run `run`.
pub(crate) fn trial_what(run: &str, number: u64) -> String {
    format!("run `{run}` trial {number}")
}

/// How errors name measurement `number` of run `run`.
pub(crate) fn measurement_what(run: &str, number: u64) -> String {
    format!("run `{run}` measurement {number}")
}

/// How errors name the record of `kind` under content key `key`.
pub(crate) fn key_what(kind: &str, key: &blake3::Hash) -> String {
    format!("{kind} {}", key.to_hex())
}
