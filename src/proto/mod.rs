//! The sans-IO protocol core: every type here is fed bytes (and the current time, where it
//! matters) and hands back bytes and actions. Nothing here opens a socket or reads a clock.

pub mod base64_stream;
#[cfg(any(test, fuzzing))]
pub mod camera_audit;
pub mod camera_request;
pub mod http_head;
pub mod interleaved;
pub mod outcome;
pub mod rewrite;
pub mod route;
pub mod rtsp;
pub mod session;
pub mod tunnel;
pub mod upstream_auth;
pub mod viewer_auth;
