//! The report page in headless Chromium (Debian's `chromium`): every image decoded, no console error,
//! the front table present.

use std::process::Command;
use std::time::Duration;

use crate::util::{ok, Dir};

/// How long headless Chromium may take to load the page.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Loads the report of a 24-trial demo search in `chromium` (the browser's command).
pub fn loads_with_every_image_decoded(chromium: String) {
    let d = Dir::new();
    ok(
        d.path(),
        &[
            "search", "--store", "s", "--run", "r", "--trials", "24", "--pairs", "24",
        ],
    );
    let index = d.path().join("mpsearch-reports/r/index.html");
    let url = format!("file://{}", index.display());
    let profile = d.path().join("chromium-profile");
    let mut child = Command::new(&chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &url,
        ])
        // Files, not pipes: the dumped DOM (the PNGs inline) outgrows a pipe's buffer.
        .stdout(std::fs::File::create(d.path().join("dom.html")).expect("dom file"))
        .stderr(std::fs::File::create(d.path().join("chromium.log")).expect("log file"))
        .spawn()
        .expect("start chromium");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait for chromium").is_none() {
        if started.elapsed() > CHROMIUM_TIMEOUT {
            let _ = child.kill();
            panic!("chromium did not load {url} within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = std::fs::read_to_string(d.path().join("dom.html")).unwrap_or_default();
    let log = std::fs::read_to_string(d.path().join("chromium.log")).unwrap_or_default();
    let check = dom
        .split("data-check=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| {
            panic!(
                "the page's self-check did not run; dumped DOM starts:\n{}\nstderr:\n{}",
                dom.chars().take(2000).collect::<String>(),
                log
            )
        });
    assert_eq!(check, "ok images=5/5 errors=0", "page {url}");
    assert!(
        dom.contains("id=\"front-table\""),
        "the front table is on the page"
    );
}
