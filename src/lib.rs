//! rtsp-tunnel-relay: lets RTSP viewers stuck behind HTTP-only firewalls watch IP cameras.
//!
//! Layout (docs/architecture.md follows a byte through it):
//! - [`proto`]: the pure protocol core. Values fed bytes and events, handing back bytes and
//!   actions; no sockets, no clocks, no threads.
//! - [`shard`]: thread-per-core io_uring event loops that move bytes for the protocol core. All
//!   `unsafe` code lives there.
//! - [`pairing`]: the process-wide cookie table that pairs a tunnel's GET and POST across shards.
//! - [`metrics`]: per-shard counters and histograms merged at scrape time, served on a side port.
//! - [`config`]: the TOML configuration, validated at start and on reload.
//! - [`control`]: which routes run (the file's and the control API's), changed one at a time.
//! - [`api`]: the control API and `/status`, on a small tokio runtime of its own.
//! - [`demo_camera`]: a built-in synthetic camera serving an embedded H.264 clip.
//! - [`web_assets`]: the embedded browser player (assets/player) and the route list page.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod admission;
pub mod api;
pub mod app;
pub mod config;
pub mod control;
pub mod demo_camera;
pub mod logging;
pub mod metrics;
pub mod pairing;
pub mod proto;
pub mod shard;
pub mod tls;
pub mod web_assets;

#[cfg(test)]
mod test_fixtures;
