//! The live view of a held sled store: what a reader sees while another handle writes, how fresh it
//! is, that it refuses writes, and that a view its holder did not write is never read.

use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;
use crate::store::live::{Pace, REWRITE_FACTOR, VIEW_FILE};

/// The view of the store in `b`, which another handle holds.
fn view_of(b: &SledBackend) -> LiveView {
    match SledStore::open_or_view(b.dir.path()).expect("open for reading") {
        Err(view) => view,
        Ok(_) => panic!("the store is held: expected its live view"),
    }
}

#[test]
fn a_held_store_is_read_through_the_view_its_writer_keeps() {
    let b = SledBackend::new();
    let writer = b.open();
    fill(&writer);
    writer.lock_run("alpha").expect("drive a run");
    assert!(b.dir.path().join(VIEW_FILE).is_file());

    let view = view_of(&b);
    assert_eq!(contents(&view), contents(&writer));
    assert_eq!(
        view.controllers().expect("controllers"),
        writer.controllers().expect("controllers")
    );
    assert_eq!(
        view.counts().expect("counts"),
        writer.counts().expect("counts")
    );
    assert_eq!(view.location(), shown(b.dir.path()));
    let info = view.info().clone();
    assert_eq!(info.pid, std::process::id());
    assert!(info.age() < Duration::from_secs(30), "{info:?}");
    let said = info.to_string();
    assert!(
        said.starts_with(&format!(
            "live view of a running search (pid {}), updated ",
            std::process::id()
        )) && said.ends_with(" s ago"),
        "{said}"
    );
    // A reader never writes through the view.
    let text = message(view.put_trial("alpha", &trial(12, TrialState::Complete)));
    assert!(
        text.contains(&format!("is in use by pid {}", std::process::id())),
        "{text}"
    );
    assert!(matches!(
        view.lock_run("beta"),
        Err(Error::StoreInUse { .. })
    ));

    // A trial alone does not rewrite the view; the manifest written after a batch does.
    writer
        .put_trial("alpha", &trial(12, TrialState::Complete))
        .expect("put");
    assert_eq!(view_of(&b).trials("alpha").expect("trials").len(), 12);
    let mut m = manifest("alpha", 10);
    m.elapsed_seconds = 42.0;
    let start = Instant::now();
    let fresh = loop {
        // Paced: a rewrite waits REWRITE_FACTOR times as long as the last one took.
        std::thread::sleep(Duration::from_millis(50));
        writer.put_run(&m).expect("put_run");
        let view = view_of(&b);
        if view.trials("alpha").expect("trials").len() == 13 {
            break view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the view was never rewritten"
        );
    };
    assert_eq!(fresh.run("alpha").expect("run"), Some(m));
    assert!(fresh.info().updated_unix_ms > info.updated_unix_ms);

    // Closed, the store is read directly again and the view is gone.
    drop(writer);
    assert!(!b.dir.path().join(VIEW_FILE).exists());
    let direct = SledStore::open_or_view(b.dir.path())
        .expect("open")
        .expect("the store itself");
    assert_eq!(direct.trials("alpha").expect("trials").len(), 13);
    assert_eq!(direct.controllers().expect("controllers"), vec![]);
}

#[test]
fn held_out_qualities_are_read_through_the_view() {
    let b = SledBackend::new();
    let writer = b.open();
    let (m, trials, _) = held_out_run(&writer);
    writer.lock_run("held").expect("drive the run");
    let view = view_of(&b);
    let front: Vec<&TrialRecord> = trials.iter().collect();
    let through_view = front_held_out(&view, &m, &front).expect("through the view");
    assert_eq!(
        through_view,
        front_held_out(&writer, &m, &front).expect("direct")
    );
    assert_eq!(through_view.1.map(|g| (g.points, g.missing)), Some((2, 1)));
}

#[test]
fn open_for_reading_says_it_is_a_live_view() {
    let b = SledBackend::new();
    let location = Location::Sled(b.dir.path().to_path_buf());
    {
        let opened = open(&location, Access::Read).expect("free store");
        assert!(opened.live.is_none());
    }
    let writer = open(&location, Access::Write).expect("writer");
    writer.store.create_run(&manifest("r", 1)).expect("create");
    writer.store.lock_run("r").expect("lock");
    let opened = open(&location, Access::Read).expect("held store");
    let live = opened.live.expect("a live view");
    assert_eq!(live.pid, std::process::id());
    assert_eq!(opened.store.runs().expect("runs").len(), 1);
    // A second writer is still refused, with the holder's pid.
    let text = message(open(&location, Access::Write).map(|_| ()));
    assert!(
        text.contains(&format!("is in use by pid {}", std::process::id())),
        "{text}"
    );
}

#[test]
fn a_view_its_holder_did_not_write_is_never_read() {
    let b = SledBackend::new();
    let writer = b.open();
    writer.create_run(&manifest("r", 1)).expect("create");
    writer.lock_run("r").expect("lock");
    let view = std::fs::read(b.dir.path().join(VIEW_FILE)).expect("a view");
    // The holder is another process than the view's writer: the reader waits, then is refused.
    std::fs::write(b.dir.path().join("owner.pid"), "4194999\n").expect("owner");
    let start = Instant::now();
    let err = SledStore::open_or_view(b.dir.path())
        .map(|_| ())
        .expect_err("refused");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "it waited for the store"
    );
    assert!(err.to_string().contains("in use by pid 4194999"), "{err}");

    // A view left behind by a process that died is removed by the next open.
    drop(writer);
    std::fs::write(b.dir.path().join(VIEW_FILE), view).expect("a stale view");
    let store = b.open();
    assert!(!b.dir.path().join(VIEW_FILE).exists());
    assert_eq!(store.controllers().expect("controllers"), vec![]);
}

#[test]
fn a_damaged_view_is_a_clear_error() {
    let b = SledBackend::new();
    let writer = b.open();
    writer.lock_run("r").expect("lock");
    std::fs::write(b.dir.path().join(VIEW_FILE), b"{\"format\":").expect("damage");
    let err = SledStore::open_or_view(b.dir.path())
        .map(|_| ())
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("its live view"), "{text}");
    assert!(text.contains("cannot be read"), "{text}");
}

#[test]
fn rewrites_are_paced_by_their_cost() {
    let mut pace = Pace::default();
    assert!(pace.due(false), "the first view is always written");
    let took = Duration::from_millis(10);
    pace.record(Instant::now(), took);
    assert!(!pace.due(false), "too soon after a 10 ms rewrite");
    assert!(pace.due(true), "forced");
    let long_ago = Instant::now()
        .checked_sub(took * (REWRITE_FACTOR + 1))
        .expect("a past instant");
    pace.record(long_ago, took);
    assert!(pace.due(false));
}
