//! Test-only pause points: `BERTH_CNI_TEST_PAUSE=<step>:<marker file>` makes the plugin create
//! the marker file at `<step>` and sleep, so that a test can kill it there with SIGKILL and
//! check that DEL and GC clean up whatever a crash at that instant leaves. Unset in production,
//! where a point costs one environment lookup.

use std::time::Duration;

/// The variable that arms a pause point.
pub const VAR: &str = "BERTH_CNI_TEST_PAUSE";

/// The named steps of ADD where a pause can be armed.
pub const STEPS: [&str; 3] = ["after-ipam", "after-bridge", "after-veth"];

/// Pauses for up to a minute at `step` if the environment asks for it.
pub fn point(step: &str) {
    let Ok(spec) = std::env::var(VAR) else {
        return;
    };
    let Some((want, marker)) = spec.split_once(':') else {
        return;
    };
    if want != step {
        return;
    }
    // The marker tells the test that the pause point is reached; if it cannot be written the
    // test times out waiting for it and fails on its own.
    let _ = std::fs::write(marker, std::process::id().to_string());
    std::thread::sleep(Duration::from_secs(60));
}
