//! The async API on a current-thread runtime: a ticker on the same (only) thread keeps ticking
//! while containers start, become ready, run execs and end: nothing blocks the runtime.

#![cfg(feature = "tokio")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use molde_container::Status;
use molde_harness::ready::WaitFor;
use molde_harness::{Harness, asynch};

mod common;
use common::require;

#[tokio::test(flavor = "current_thread")]
async fn nothing_blocks_a_current_thread_runtime() {
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root to mount overlay writable layers",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::open(dir.path().join("h")).unwrap();
    let bins: Vec<&Path> = ["/bin/sh", "/bin/sleep", "/bin/echo", "/bin/cat"]
        .iter()
        .map(Path::new)
        .collect();
    let image = molde_image::base::from_host(harness.store(), &bins).unwrap();

    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(5));
        loop {
            every.tick().await;
            t.fetch_add(1, Ordering::Relaxed);
        }
    });

    let began = Instant::now();
    let mut c = asynch::start(
        &harness,
        harness
            .container(&image)
            .command("/bin/sh")
            .args(["-c", "sleep 0.3; echo up; sleep 0.4; echo bye >&2; exit 7"]),
    )
    .await
    .unwrap();
    let mut logs = c.logs().unwrap();
    c.ready(vec![WaitFor::log("^up$").unwrap()]).await.unwrap();
    let out = c
        .exec_output(vec!["/bin/echo".into(), "from exec".into()])
        .await
        .unwrap();
    assert_eq!(out.stdout, b"from exec\n");
    let status = c.wait().await.unwrap();
    assert_eq!(
        status,
        Status::Exited {
            code: Some(7),
            signal: None
        }
    );
    let mut lines = Vec::new();
    while let Some(l) = logs.next().await {
        lines.push(l.unwrap().text().into_owned());
    }
    assert_eq!(lines, ["up", "bye"]);
    let elapsed = began.elapsed();
    let n = ticks.load(Ordering::Relaxed);
    ticker.abort();
    // The container ran >= 0.7 s; a blocked runtime thread would have ticked about never.
    assert!(elapsed >= Duration::from_millis(700));
    let expected = elapsed.as_millis() as usize / 5;
    assert!(
        n * 2 >= expected,
        "the ticker ticked {n} times in {elapsed:?}: the runtime was blocked"
    );
    c.into_inner().close().unwrap();
}
