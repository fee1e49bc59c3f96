//! A viewer attached to a shared route: the relay's RTSP dialogue with it, and what the route
//! needs to know of its session.

use std::time::Instant;

use crate::proto::shared_viewer::SharedViewer;

#[derive(Debug)]
pub(super) struct Attached<V> {
    /// The shell's name for it.
    pub id: V,
    /// `None` only when its session had no URL map to answer with (it then gets no answer,
    /// but still counts towards the camera's demand).
    pub dialogue: Option<SharedViewer>,
    /// When its session started (its setup time is measured from here).
    pub started_at: Instant,
    /// The route ended it: it gets nothing more, and waits to be detached.
    pub ending: bool,
}
