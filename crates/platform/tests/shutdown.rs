//! Sends a real SIGTERM to the test process. It lives in its own test binary so that no other
//! test shares the process while it does.

use std::time::Duration;

use platform::shutdown;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn sigterm_cancels_the_token() {
    let token = CancellationToken::new();
    shutdown::on_signal(token.clone());

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("Failed to run kill");
    assert!(status.success());

    tokio::time::timeout(Duration::from_secs(5), token.cancelled())
        .await
        .expect("the token was not cancelled");
}
