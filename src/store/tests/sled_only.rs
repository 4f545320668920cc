//! What only the sled backend has: the whole folder belongs to one handle, so a second open fails
//! with the holder's pid (in this process and from a real second process), and bytes that are not
//! even JSON can be found in a damaged tree.

use std::path::Path;
use std::process::Command;

use super::*;
use crate::error::Error;

/// The environment variable that makes [`in_use_probe_child`] open a store (in a child process).
const PROBE_ENV: &str = "MPSEARCH_STORE_PROBE_DIR";
/// The line prefix under which the child reports what happened.
const PROBE_PREFIX: &str = "PROBE-RESULT: ";

#[test]
fn store_in_use_in_this_process() {
    let b = SledBackend::new();
    let dir = b.dir.path();
    let first = b.open();
    let err = SledStore::open(dir).expect_err("a second open must fail");
    let pid = std::process::id().to_string();
    match &err {
        Error::StoreInUse { location, pid: p } => {
            assert_eq!(location, &shown(dir));
            assert_eq!(p, &pid);
        }
        other => panic!("expected StoreInUse, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&format!("in use by pid {pid}")), "{text}");
    assert!(text.contains(&shown(dir)), "{text}");

    // Without a readable owner file the pid is unknown, and the store still works.
    std::fs::remove_file(dir.join("owner.pid")).expect("remove owner.pid");
    let text = SledStore::open(dir).expect_err("still held").to_string();
    assert!(text.contains("in use by pid unknown"), "{text}");
    first
        .create_run(&manifest("r", 1))
        .expect("the holder still writes");

    // Once the holder is gone, the store opens again.
    drop(first);
    let again = b.open();
    assert!(again.run("r").expect("run").is_some());
}

/// Run by [`store_in_use_by_another_process`] in a child process (a no-op otherwise): opens the store
/// named by [`PROBE_ENV`] and prints what happened.
#[test]
fn in_use_probe_child() {
    let Some(dir) = std::env::var_os(PROBE_ENV) else {
        return;
    };
    match SledStore::open(Path::new(&dir)) {
        Ok(_) => println!("{PROBE_PREFIX}opened"),
        Err(e) => println!("{PROBE_PREFIX}{e}"),
    }
}

#[test]
fn store_in_use_by_another_process() {
    let b = SledBackend::new();
    let dir = b.dir.path();
    let _held = b.open();
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(&exe);
    command
        .args([
            "--exact",
            "store::tests::sled_only::in_use_probe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, dir);
    let output = command.output().expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(PROBE_PREFIX).map(|(_, result)| result))
        .unwrap_or_else(|| {
            panic!(
                "{command:?} printed no result in {}:\nstdout:\n{stdout}\nstderr:\n{}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let expected = format!(
        "store {} is in use by pid {}",
        dir.display(),
        std::process::id()
    );
    assert!(
        line.starts_with(&expected),
        "child said: {line}\nexpected: {expected}…"
    );
}

#[test]
fn bytes_that_are_not_json_are_a_clear_error() {
    let b = SledBackend::new();
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");
    b.raw_put(&store, Raw::Trial("r", 42), b"\xff\x00garbage");
    let text = message(store.trials("r"));
    assert!(
        text.contains("run `r` trial 42 cannot be decoded"),
        "{text}"
    );
    assert!(text.contains(&shown(b.dir.path())), "{text}");
}
