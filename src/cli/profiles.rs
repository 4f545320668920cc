//! # `profiles`
//!
//! The shipped hardware profiles (and whether a local file overrides one), then the local ones of
//! `./hardware-profiles/`.

use std::process::ExitCode;

use mpsearch::cost::HardwareProfile;
use mpsearch::shipped::{self, Kind};

use super::output::{emit, table};

pub fn run() -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let local = shipped::local(Kind::Profile);
    for (name, text) in Kind::Profile.embedded() {
        let p = HardwareProfile::from_toml(text, format!("shipped:{name}"))?;
        let overridden = local
            .iter()
            .any(|(n, path)| n == name && std::fs::read_to_string(path).is_ok_and(|t| t != *text));
        let origin = if overridden {
            format!("shipped, overridden by ./hardware-profiles/{name}.toml")
        } else {
            "shipped".into()
        };
        rows.push(vec![
            name.to_string(),
            p.file.profile.device.to_string(),
            origin,
            p.file.profile.description.clone(),
        ]);
    }
    for (name, path) in local {
        if Kind::Profile.embedded().iter().any(|(n, _)| *n == name) {
            continue;
        }
        let (device, description) = match HardwareProfile::load(&path) {
            Ok(p) => (
                p.file.profile.device.to_string(),
                p.file.profile.description.clone(),
            ),
            Err(e) => ("?".into(), format!("does not load: {e}")),
        };
        rows.push(vec![
            name,
            device,
            format!("local {}", path.display()),
            description,
        ]);
    }
    emit(&table(
        &["profile", "device", "origin", "description"],
        &rows,
        4,
    ))
}
