//! # Where a store is
//!
//! [`Location`]: what `--store` names — a `postgres://` (or `postgresql://`) URL is a PostgreSQL
//! database, anything else a sled folder — and [`open`], which opens it for reading or for writing.
//! A location prints without its password, so it can appear in messages and listings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::live::{LiveInfo, LiveView};
use super::postgres::{redact, PostgresStore};
use super::sled::SledStore;
use super::Store;
use crate::error::Result;

/// A store's place: a local folder (sled) or a PostgreSQL database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The folder of a sled store.
    Sled(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user[:password]@host[:port]/database[?…]`; a Unix
    /// socket folder goes percent-encoded in the host, `postgres://me@%2Frun%2Fpostgresql/db`).
    Postgres(String),
}

/// The URL schemes of a PostgreSQL store.
const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

impl FromStr for Location {
    type Err = String;

    /// A `postgres://` or `postgresql://` URL (checked by the client's parser), else a folder. Any
    /// other `scheme://` is refused rather than taken for a folder name.
    fn from_str(text: &str) -> std::result::Result<Location, String> {
        if text.is_empty() {
            return Err("a store is a folder or a postgres:// URL; got nothing".into());
        }
        if POSTGRES_SCHEMES.iter().any(|s| text.starts_with(s)) {
            return text
                .parse::<::postgres::Config>()
                .map(|_| Location::Postgres(text.to_string()))
                .map_err(|e| {
                    format!(
                        "`{}` is not a PostgreSQL URL the client understands ({e}); write \
                         postgres://USER@HOST[:PORT]/DATABASE, with a Unix socket folder \
                         percent-encoded as the host (postgres://USER@%2Frun%2Fpostgresql/DATABASE)",
                        redact(text)
                    )
                });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
            {
                return Err(format!(
                    "`{scheme}://` stores are not supported: a store is a folder (sled) or a \
                     postgres:// URL"
                ));
            }
        }
        Ok(Location::Sled(PathBuf::from(text)))
    }
}

impl fmt::Display for Location {
    /// The folder, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sled(dir) => write!(f, "{}", dir.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl Location {
    /// The backend's name: `sled` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Location::Sled(_) => "sled",
            Location::Postgres(_) => "postgres",
        }
    }
}

/// What an opened store is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Listing, reporting, exporting, copying from: a sled store that a search holds is read through
    /// its live view.
    Read,
    /// Searching, resuming, copying into: a sled store must be free (else
    /// [`crate::Error::StoreInUse`]).
    Write,
}

/// An opened store, and whether it is the live view of a running search (and how old).
pub struct Opened {
    pub store: Box<dyn Store>,
    /// `Some` when `store` is a sled store's [`LiveView`]: a running search's copy, as of its last
    /// batch.
    pub live: Option<LiveInfo>,
}

/// Opens the store at `location` for `access`. A sled folder is created if missing; a PostgreSQL
/// database gets its tables on first use.
pub fn open(location: &Location, access: Access) -> Result<Opened> {
    let plain = |store: Box<dyn Store>| Opened { store, live: None };
    match (location, access) {
        (Location::Sled(dir), Access::Write) => Ok(plain(Box::new(SledStore::open(dir)?))),
        (Location::Sled(dir), Access::Read) => match SledStore::open_or_view(dir)? {
            Ok(store) => Ok(plain(Box::new(store))),
            Err(view) => Ok(live(view)),
        },
        (Location::Postgres(url), _) => Ok(plain(Box::new(PostgresStore::connect(url)?))),
    }
}

fn live(view: LiveView) -> Opened {
    Opened {
        live: Some(view.info().clone()),
        store: Box::new(view),
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("location", &self.store.location())
            .field("live", &self.live)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_postgres_urls_are_told_apart() {
        assert_eq!(
            "mpsearch-store".parse::<Location>(),
            Ok(Location::Sled("mpsearch-store".into()))
        );
        assert_eq!(
            "/tmp/a b/store".parse::<Location>(),
            Ok(Location::Sled("/tmp/a b/store".into()))
        );
        for url in [
            "postgres://me@localhost/db",
            "postgresql://me:secret@127.0.0.1:5433/db?application_name=x",
            "postgres://postgres@%2Ftmp%2Fpg/postgres",
        ] {
            assert_eq!(
                url.parse::<Location>(),
                Ok(Location::Postgres(url.into())),
                "{url}"
            );
        }
        let err = "mysql://me@host/db".parse::<Location>().unwrap_err();
        assert!(err.contains("`mysql://` stores are not supported"), "{err}");
        let err = "postgres://me:pw@host:notaport/db"
            .parse::<Location>()
            .unwrap_err();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
        assert!(!err.contains("pw"), "the password is never printed: {err}");
    }

    #[test]
    fn a_location_prints_without_its_password() {
        let l: Location = "postgres://me:s3cret@db.example:5432/runs?sslmode=disable&password=x2"
            .parse()
            .expect("a URL");
        let shown = l.to_string();
        assert_eq!(shown, "postgres://me@db.example:5432/runs?sslmode=disable");
        assert_eq!(l.backend(), "postgres");
        let s: Location = "runs/store".parse().expect("a folder");
        assert_eq!(s.to_string(), "runs/store");
        assert_eq!(s.backend(), "sled");
    }
}
