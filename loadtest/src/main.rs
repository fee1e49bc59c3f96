//! `loadtest`: simulated cameras and viewers for sizing rtsp-tunnel-relay (see loadtest/README.md).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("loadtest: under construction in this commit")
}
