//! The demo: an embedded broker, a worker and a small submitter, all in one process.

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
