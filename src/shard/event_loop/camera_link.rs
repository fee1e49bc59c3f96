//! What lies under RTSP on a camera connection (see `proto::upstream_link`): the TLS client of
//! an `rtsps://` camera, fed from the ring like a viewer's TLS; the HTTP tunnel of an
//! `rtsp+http(s)://` camera (this connection its GET, a second one, `Role::CameraPost`, its
//! POST). Their failures are the camera's, with their reason: a certificate that does not
//! verify is a state the operator sees, not a silent retry.

use super::*;
use crate::proto::camera_tunnel::{CameraTunnelClient, GetProgress};
use crate::proto::link_failure::LinkFailure;
use crate::shard::conn::CameraTunnelLink;

/// Where the RTSP bytes of one camera receive are, once TLS and the tunnel's GET answer are
/// off them.
pub(in crate::shard) enum CameraRx {
    /// The ring buffer as received (plain TCP, or a tunnel past its answer).
    Ring,
    /// Decrypted or past the GET answer, in `Io::plain`; `closed`: the camera said
    /// close_notify after them.
    Plain { closed: bool },
    /// The link failed: why, for the camera's state and the logs.
    Failed(LinkFailure),
}

impl Shard {
    /// A camera connection (`role`: a passthrough session's or a shared camera's) with its
    /// connect submitted, and for an HTTP tunnel its POST's too; `None` when no socket could
    /// be made.
    pub(in crate::shard) fn connect_camera_link(
        &mut self,
        addr: SocketAddr,
        role: Role,
        link: &UpstreamLink,
    ) -> Option<usize> {
        let idx = self.connect_camera_socket(addr, role)?;
        if !self.start_camera_tls(idx, link) {
            self.close_conn(idx);
            return None;
        }
        let Some(target) = &link.http_tunnel else { return Some(idx) };
        let generation = self.io.conns.get(idx).map(|c| c.generation()).unwrap_or_default();
        let Some(post) = self.connect_camera_socket(addr, Role::CameraPost { get: idx, generation }) else {
            self.close_conn(idx);
            return None;
        };
        if !self.start_camera_tls(post, link) {
            self.close_conn(post);
            self.close_conn(idx);
            return None;
        }
        let seed = u128::from(self.relay.rng.next_u64()) << 64 | u128::from(self.relay.rng.next_u64());
        let client =
            CameraTunnelClient::new(&target.target, &target.host, seed, self.relay.settings.limits.max_header_bytes);
        let post_generation = self.io.conns.get(post).map(|c| c.generation()).unwrap_or_default();
        if let Some(c) = self.io.conns.get_mut(idx) {
            c.camera_tunnel = Some(Box::new(CameraTunnelLink {
                client,
                post: (post, post_generation),
                post_connected: false,
                post_head_sent: false,
                reported: false,
            }));
        }
        Some(idx)
    }

    fn start_camera_tls(&mut self, idx: usize, link: &UpstreamLink) -> bool {
        let Some(tls) = &link.tls else { return true };
        match TlsStream::client(tls.config.clone(), tls.server_name.clone()) {
            Ok(stream) => {
                if tls.verification == TlsVerification::Insecure {
                    self.metrics.upstream_insecure_tls();
                }
                if let Some(c) = self.io.conns.get_mut(idx) {
                    c.set_tls(Box::new(stream));
                }
                true
            }
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "cannot start TLS towards a camera");
                false
            }
        }
    }

    /// The camera accepted the connection: a TLS client says hello first, a tunnel sends its
    /// GET. Whether RTSP may start now (a tunnel waits for the GET's answer and the POST).
    pub(in crate::shard) fn camera_link_connected(&mut self, idx: usize) -> bool {
        let Some(c) = self.io.conns.get(idx) else { return false };
        let head = c.camera_tunnel.as_ref().map(|t| t.client.get_head());
        if c.has_tls() || head.is_some() {
            self.io.queue_owned(idx, head.clone().unwrap_or_default());
        }
        head.is_none()
    }

    /// Bytes for the camera: up the tunnel's POST (base64) when there is one. Returns what is
    /// then queued on the connection they went to (the POST's queue for a tunnel: the GET's
    /// carries nothing after its head), for the camera backlog limit; `None` if none took them.
    pub(in crate::shard) fn queue_to_camera(&mut self, idx: usize, bytes: Vec<u8>) -> Option<usize> {
        let encoded = self.io.conns.get(idx).and_then(|c| c.camera_tunnel.as_ref()).map(|t| t.client.encode(&bytes));
        let to = match (encoded, self.camera_post_of(idx)) {
            (Some(encoded), Some(post)) => {
                self.io.queue_owned(post, encoded);
                post
            }
            // The POST is gone: the camera is being lost with it.
            (Some(_), None) => return None,
            (None, _) => {
                self.io.queue_owned(idx, bytes);
                idx
            }
        };
        self.io.conns.get(to).map(|c| c.send().queued())
    }

    /// The TLS and tunnel layers of one receive on a camera connection.
    pub(in crate::shard) fn camera_rx(&mut self, idx: usize, bid: u16, len: usize) -> CameraRx {
        let Some(c) = self.io.conns.get_mut(idx) else { return CameraRx::Ring };
        let tunnel_open = c.camera_tunnel.as_ref().is_none_or(|t| t.client.is_open());
        if !c.has_tls() && tunnel_open {
            return CameraRx::Ring;
        }
        let mut plain = std::mem::take(&mut self.io.plain);
        plain.clear();
        let mut closed = false;
        let mut to_send = false;
        match c.tls_mut() {
            Some(tls) => {
                let received = tls.receive(self.io.bufs.bytes(bid, len), &mut plain);
                if let Some(cipher) = tls.take_outgoing() {
                    c.send_mut().push_owned(cipher);
                    to_send = true;
                }
                match received {
                    Ok(peer_closed) => closed = peer_closed,
                    Err(e) => {
                        self.io.plain = plain;
                        if to_send {
                            self.io.conns.dirty.push(idx);
                        }
                        return CameraRx::Failed(LinkFailure::tls(&e));
                    }
                }
            }
            None => plain.extend_from_slice(self.io.bufs.bytes(bid, len)),
        }
        let mut opened = false;
        if let Some(t) = c.camera_tunnel.as_mut().filter(|t| !t.client.is_open()) {
            match t.client.receive_get(&plain) {
                Ok(GetProgress::Waiting) => plain.clear(),
                Ok(GetProgress::Open { consumed }) => {
                    plain.drain(..consumed.min(plain.len()));
                    opened = true;
                }
                Ok(GetProgress::Rtsp) => {}
                Err(e) => {
                    self.io.plain = plain;
                    return CameraRx::Failed(LinkFailure::tunnel(&e));
                }
            }
        }
        self.io.plain = plain;
        if to_send {
            self.io.conns.dirty.push(idx);
        }
        if opened {
            self.camera_tunnel_progress(idx);
        }
        CameraRx::Plain { closed }
    }

    /// The tunnel moved on (its GET answered, its POST connected): the POST's head goes once
    /// both hold, and then the camera is reachable for RTSP.
    fn camera_tunnel_progress(&mut self, idx: usize) {
        let Some(t) = self.io.conns.get_mut(idx).and_then(|c| c.camera_tunnel.as_mut()) else { return };
        if !t.client.is_open() || !t.post_connected || t.reported {
            return;
        }
        t.reported = true;
        let (post, head) = (t.post.0, (!t.post_head_sent).then(|| t.client.post_head()));
        t.post_head_sent = true;
        if let Some(head) = head {
            self.io.queue_owned(post, head);
        }
        self.on_camera_link_open(idx);
    }

    /// The connect of a tunnel's POST completed.
    pub(in crate::shard) fn on_camera_post_connect(&mut self, post: usize, get: usize, generation: u32, res: i32) {
        let current = self
            .io
            .conns
            .current(get, generation)
            .is_some_and(|c| !c.is_closing() && c.camera_tunnel.as_ref().is_some_and(|t| t.post.0 == post));
        if !current {
            self.close_conn(post);
            return;
        }
        if res != 0 {
            tracing::info!(shard = self.id, error = %std::io::Error::from_raw_os_error(-res), "camera tunnel POST connect failed");
            self.camera_post_ended(post, get, generation);
            return;
        }
        // Read only to see it close: the camera answers down the GET.
        self.io.arm_recv(post);
        if self.io.conns.get(post).is_some_and(|c| c.has_tls()) {
            self.io.queue_owned(post, Vec::new());
        }
        if let Some(t) = self.io.conns.get_mut(get).and_then(|c| c.camera_tunnel.as_mut()) {
            t.post_connected = true;
        }
        self.camera_tunnel_progress(get);
    }

    /// Bytes on a tunnel's POST: nothing of the camera's (it answers down the GET), but over
    /// TLS the POST's own handshake and key updates come this way.
    pub(in crate::shard) fn on_camera_post_recv(&mut self, post: usize, bid: u16, len: usize) {
        let Some(c) = self.io.conns.get_mut(post) else { return };
        let Some(tls) = c.tls_mut() else { return };
        let mut ignored = Vec::new();
        let failed = tls.receive(self.io.bufs.bytes(bid, len), &mut ignored).is_err();
        let cipher = tls.take_outgoing();
        let role = c.role();
        if let Some(cipher) = cipher {
            c.send_mut().push_owned(cipher);
            self.io.conns.dirty.push(post);
        }
        if let (true, Some(Role::CameraPost { get, generation })) = (failed, role) {
            tracing::warn!(shard = self.id, "camera tunnel POST: TLS failed");
            self.camera_post_ended(post, get, generation);
        }
    }

    /// A tunnel's POST closed or failed: the camera is lost as if its GET had closed.
    pub(in crate::shard) fn camera_post_ended(&mut self, post: usize, get: usize, generation: u32) {
        self.close_conn(post);
        let Some(role) = self.io.conns.current(get, generation).filter(|c| !c.is_closing()).and_then(|c| c.role())
        else {
            return;
        };
        if matches!(role, Role::Camera(_) | Role::Upstream(_)) {
            self.on_conn_ended(get, Some(role), -libc::ECONNRESET);
        }
    }

    /// The tunnel's POST of a camera connection, if it has one (and it is still that one).
    pub(in crate::shard) fn camera_post_of(&self, idx: usize) -> Option<usize> {
        let (post, generation) = self.io.conns.get(idx)?.camera_tunnel.as_ref()?.post;
        self.io.conns.current(post, generation).map(|_| post)
    }
}
