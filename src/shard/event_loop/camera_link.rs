//! What lies under RTSP on a camera connection (see `proto::upstream_link`): the TLS client of
//! an `rtsps://` camera, fed from the ring like a viewer's TLS, its failures reported as the
//! camera's (a certificate that does not verify is a state the operator sees, with its reason).

use super::*;
use crate::shard::camera_table::CameraKey;

impl Shard {
    /// Sets up what the route puts under RTSP on a new camera connection. `false`: it cannot
    /// be (logged; the connection is not to be used).
    pub(super) fn start_camera_link(&mut self, idx: usize, link: &UpstreamLink) -> bool {
        let Some(tls) = &link.tls else { return true };
        match TlsStream::client(tls.config.clone(), tls.server_name.clone()) {
            Ok(stream) => {
                if tls.verification == TlsVerification::Insecure {
                    self.metrics.upstream_insecure_tls();
                }
                if let Some(c) = self.conns.get_mut(idx) {
                    c.tls = Some(Box::new(stream));
                }
                true
            }
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "cannot start TLS towards a camera");
                false
            }
        }
    }

    /// The camera accepted the connection: a TLS client says hello first.
    pub(super) fn camera_link_connected(&mut self, idx: usize) {
        if self.conns.get(idx).is_some_and(|c| c.tls.is_some()) {
            self.queue_owned(idx, Vec::new());
        }
    }

    /// Bytes from a shared camera's connection: decrypted first on a TLS camera (the media then
    /// goes to viewers from copies, the plaintext not being in the ring).
    pub(super) fn on_camera_recv(&mut self, idx: usize, ck: CameraKey, bid: u16, len: usize) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        let Some(tls) = c.tls.as_mut() else {
            self.on_camera_data(ck, bid, len);
            return;
        };
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let received = tls.receive(self.bufs.bytes(bid, len), &mut plain);
        if let Some(cipher) = tls.take_outgoing() {
            c.send.push_owned(cipher);
            self.conns.dirty.push(idx);
        }
        match received {
            Ok(peer_closed) => {
                if !plain.is_empty() {
                    self.on_camera_plain(ck, &mut plain);
                }
                self.plain = plain;
                if peer_closed {
                    self.on_camera_closed(idx, ck);
                }
            }
            Err(e) => {
                self.plain = plain;
                let reason = tls_reason(&e);
                let peer = self.conns.get(idx).map(|c| c.peer);
                let route = self.cameras.get(ck).map(|s| s.route.path.clone()).unwrap_or_default();
                tracing::warn!(shard = self.id, route = %route, camera = ?peer, error = %reason, "camera TLS failed");
                self.close_conn(idx);
                if let Some(slot) = self.cameras.get_mut(ck).filter(|s| s.conn == Some(idx)) {
                    slot.conn = None;
                    slot.camera.handle_tls_failed(reason, Instant::now());
                }
                self.drive_camera(ck);
            }
        }
    }

    /// A passthrough session's camera failed TLS: its viewer is answered 503 and the session
    /// ends (`relay_upstream_errors_total{reason="tls_failed"}`).
    pub(super) fn upstream_tls_failed(&mut self, idx: usize, key: SessionKey, e: &rustls::Error) {
        let peer = self.conns.get(idx).map(|c| c.peer);
        tracing::warn!(shard = self.id, camera = ?peer, error = %tls_reason(e), "camera TLS failed");
        if let Some(s) = self.session(key) {
            s.upstream = None;
            s.tunnel.handle(Input::CameraClosed(UpstreamErrorKind::TlsFailed), Instant::now());
        }
        self.close_conn(idx);
        self.apply(key, Fed::Nothing);
    }
}

/// The camera's last error as the operator reads it.
fn tls_reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure) => {
            "TLS: the camera's certificate does not match upstream_fingerprint".to_owned()
        }
        rustls::Error::InvalidCertificate(c) => format!("TLS: the camera's certificate is not trusted: {c:?}"),
        other => format!("TLS: {other}"),
    }
}
