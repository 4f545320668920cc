//! Copies between any two backends: every record arrives as it was, a copy done again changes
//! nothing, a conflicting run (one measured again since, too) refuses the copy before anything is
//! written, runs of other names are merged, and a run being driven is not copied.

use super::*;

fn copies_everything_and_again_nothing<A: Backend, B: Backend>(a: &A, b: &B) {
    let from = a.open();
    fill(&from);
    let to = b.open();
    let summary = copy(&from, &to).expect("copy");
    assert_eq!(
        summary,
        CopySummary {
            runs: 2,
            trials: 13,
            snapshots: 1,
            measurements: 4,
            cached: 1,
            sensitivity: 1,
            ..CopySummary::default()
        }
    );
    assert_eq!(contents(&to), contents(&from));
    assert_eq!(to.counts().expect("counts"), from.counts().expect("counts"));
    assert_eq!(
        to.controllers().expect("controllers").len(),
        2,
        "the copy drives what it writes"
    );
    drop(to);

    // Again: everything is there already, identical.
    let to = b.open();
    let again = copy(&from, &to).expect("copy again");
    assert_eq!(
        again,
        CopySummary {
            runs_present: 2,
            cached_present: 1,
            sensitivity_present: 1,
            ..CopySummary::default()
        }
    );
    assert_eq!(contents(&to), contents(&from));
}

fn a_conflicting_run_refuses_the_copy_and_other_runs_merge<A: Backend, B: Backend>(a: &A, b: &B) {
    let from = a.open();
    fill(&from);
    let to = b.open();
    // Another run (merged), and `beta` with one more trial than the source's (a conflict).
    to.create_run(&manifest("gamma", 5)).expect("create");
    to.create_run(&manifest("beta", 20)).expect("create");
    to.put_trials(
        "beta",
        &[
            trial(0, TrialState::Complete),
            trial(1, TrialState::Complete),
        ],
    )
    .expect("trials");
    let before = contents(&to);
    let text = message(copy(&from, &to));
    assert!(
        text.contains("already holds runs that differ from those of"),
        "{text}"
    );
    assert!(text.contains("`beta` (2 trials there, 1 here)"), "{text}");
    assert!(!text.contains("alpha"), "{text}");
    assert_eq!(contents(&to), before, "nothing was written");

    // Without the conflict, the source's runs join the target's.
    let other = B::make().expect("a second store of the same backend");
    let to = other.open();
    to.create_run(&manifest("gamma", 5)).expect("create");
    copy(&from, &to).expect("copy");
    let names: Vec<String> = to
        .runs()
        .expect("runs")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["gamma", "alpha", "beta"]);
}

fn a_run_measured_since_its_copy_differs<A: Backend, B: Backend>(a: &A, b: &B) {
    let from = a.open();
    fill(&from);
    let to = b.open();
    copy(&from, &to).expect("copy");
    from.put_measurements("alpha", &[measurement(4, MeasuredSource::Reference)])
        .expect("measure again");
    let before = contents(&to);
    let text = message(copy(&from, &to));
    assert!(
        text.contains("`alpha` (other measurements: 4 there, 5 here)"),
        "{text}"
    );
    assert_eq!(contents(&to), before, "nothing was written");
}

fn a_driven_run_is_not_copied<A: Backend, B: Backend>(a: &A, b: &B) {
    let from = a.open();
    fill(&from);
    from.lock_run("beta").expect("drive");
    let to = b.open();
    let text = message(copy(&from, &to));
    assert!(
        text.contains(&format!(
            "run `beta` is being driven by pid {}",
            std::process::id()
        )),
        "{text}"
    );
    assert_eq!(to.counts().expect("counts").runs, 0);
}

macro_rules! between {
    ($name:ident, $a:ident, $b:ident) => {
        mod $name {
            use super::*;

            fn pair() -> Option<($a, $b)> {
                Some(($a::make()?, $b::make()?))
            }

            #[test]
            fn copies_everything_and_again_nothing() {
                if let Some((a, b)) = pair() {
                    super::copies_everything_and_again_nothing(&a, &b);
                }
            }

            #[test]
            fn a_conflicting_run_refuses_the_copy_and_other_runs_merge() {
                if let Some((a, b)) = pair() {
                    super::a_conflicting_run_refuses_the_copy_and_other_runs_merge(&a, &b);
                }
            }

            #[test]
            fn a_run_measured_since_its_copy_differs() {
                if let Some((a, b)) = pair() {
                    super::a_run_measured_since_its_copy_differs(&a, &b);
                }
            }

            #[test]
            fn a_driven_run_is_not_copied() {
                if let Some((a, b)) = pair() {
                    super::a_driven_run_is_not_copied(&a, &b);
                }
            }
        }
    };
}

between!(sled_to_sled, SledBackend, SledBackend);
between!(sled_to_postgres, SledBackend, PgBackend);
between!(postgres_to_sled, PgBackend, SledBackend);
between!(postgres_to_postgres, PgBackend, PgBackend);
