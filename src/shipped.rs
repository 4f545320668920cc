//! # Shipped files
//!
//! The search spaces and hardware profiles of the repository's `search-spaces/` and
//! `hardware-profiles/` folders, embedded at build time, and how a command-line argument finds one:
//! an existing path is read as a file; otherwise a bare name is looked up in `./<folder>/NAME.toml`
//! (local files, such as a profile written by `mpsearch calibrate`), then among the embedded ones.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
}

/// What kind of shipped file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Space,
    Profile,
}

impl Kind {
    /// The repository folder of this kind.
    pub fn folder(&self) -> &'static str {
        match self {
            Kind::Space => "search-spaces",
            Kind::Profile => "hardware-profiles",
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Kind::Space => "search space",
            Kind::Profile => "hardware profile",
        }
    }

    /// The embedded (name, text) pairs.
    pub fn embedded(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Space => embedded::SPACES,
            Kind::Profile => embedded::PROFILES,
        }
    }
}

/// A file's text and where it came from (`shipped:NAME` for an embedded one).
#[derive(Clone, Debug)]
pub struct Source {
    pub text: String,
    pub origin: PathBuf,
}

/// Finds `arg` as a path, a local `./<folder>/ARG.toml`, or a shipped name.
pub fn find(kind: Kind, arg: &str) -> Result<Source> {
    let path = Path::new(arg);
    let looks_like_path = arg.contains('/') || arg.contains('\\') || arg.ends_with(".toml");
    if path.is_file() || looks_like_path {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        return Ok(Source {
            text,
            origin: path.to_path_buf(),
        });
    }
    let local = Path::new(kind.folder()).join(format!("{arg}.toml"));
    if local.is_file() {
        let text = std::fs::read_to_string(&local).map_err(|e| Error::io(&local, e))?;
        return Ok(Source {
            text,
            origin: local,
        });
    }
    if let Some((_, text)) = kind.embedded().iter().find(|(n, _)| *n == arg) {
        return Ok(Source {
            text: (*text).to_string(),
            origin: PathBuf::from(format!("shipped:{arg}")),
        });
    }
    let names: Vec<&str> = kind.embedded().iter().map(|(n, _)| *n).collect();
    Err(Error::NotFound {
        message: format!(
            "no {} `{arg}`: it is not a file, not ./{}/{arg}.toml, and not a shipped name (shipped: {}). \
             Give a path to a .toml file or one of the shipped names.",
            kind.what(),
            kind.folder(),
            names.join(", ")
        ),
    })
}

/// Local files of `kind` in `./<folder>/` that are not shipped, as (name, path).
pub fn local(kind: Kind) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(kind.folder())
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Finds and resolves a search space against a model's layers.
pub fn space(arg: &str, layers: &[crate::space::LayerInfo]) -> Result<crate::space::SearchSpace> {
    let src = find(Kind::Space, arg)?;
    crate::space::file::parse(&src.text, src.origin, layers)
}

/// Finds and validates a hardware profile.
pub fn profile(arg: &str) -> Result<crate::cost::HardwareProfile> {
    let src = find(Kind::Profile, arg)?;
    crate::cost::HardwareProfile::from_toml(&src.text, src.origin)
}
