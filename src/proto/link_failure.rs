//! Why a camera's link under RTSP failed (its TLS, or its HTTP tunnel's answer to the GET), in
//! words for the operator, and what that means for the camera's state and the session's
//! outcome. A certificate that does not verify is a state the operator sees with its reason,
//! not a silent retry.

use crate::proto::camera_session::CameraOutcome;
use crate::proto::camera_tunnel::CameraTunnelError;
use crate::proto::outcome::UpstreamErrorKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFailure {
    /// The camera's last error as the operator reads it.
    pub reason: String,
    pub tls: bool,
    /// The tunnel's GET was answered with this status.
    pub status: Option<u16>,
}

impl LinkFailure {
    pub fn tls(e: &rustls::Error) -> LinkFailure {
        let reason = match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure) => {
                "TLS: the camera's certificate does not match upstream_fingerprint".to_owned()
            }
            rustls::Error::InvalidCertificate(c) => format!("TLS: the camera's certificate is not trusted: {c:?}"),
            other => format!("TLS: {other}"),
        };
        LinkFailure { reason, tls: true, status: None }
    }

    pub fn tunnel(e: &CameraTunnelError) -> LinkFailure {
        let status = match e {
            CameraTunnelError::Status(s) => Some(*s),
            _ => None,
        };
        LinkFailure { reason: format!("HTTP tunnel: {e}"), tls: false, status }
    }

    /// The camera's state after it (a shared route's camera session, a route's health).
    pub fn outcome(&self) -> CameraOutcome {
        match (self.tls, self.status) {
            (true, _) => CameraOutcome::TlsFailed,
            (false, Some(401)) => CameraOutcome::AuthFailed,
            (false, Some(_)) => CameraOutcome::Refused,
            (false, None) => CameraOutcome::ProtocolError,
        }
    }

    /// The passthrough session's upstream error.
    pub fn upstream_kind(&self) -> UpstreamErrorKind {
        match (self.tls, self.status) {
            (true, _) => UpstreamErrorKind::TlsFailed,
            (false, Some(401)) => UpstreamErrorKind::AuthFailed,
            (false, _) => UpstreamErrorKind::Garbage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_failure_is_the_cameras_state_with_its_reason() {
        let pinned = LinkFailure::tls(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ));
        assert_eq!(pinned.reason, "TLS: the camera's certificate does not match upstream_fingerprint");
        assert_eq!(
            (pinned.outcome(), pinned.upstream_kind()),
            (CameraOutcome::TlsFailed, UpstreamErrorKind::TlsFailed)
        );
        let unauthorized = LinkFailure::tunnel(&CameraTunnelError::Status(401));
        assert_eq!(unauthorized.status, Some(401));
        assert_eq!(
            (unauthorized.outcome(), unauthorized.upstream_kind()),
            (CameraOutcome::AuthFailed, UpstreamErrorKind::AuthFailed)
        );
        let refused = LinkFailure::tunnel(&CameraTunnelError::Status(404));
        assert_eq!((refused.outcome(), refused.upstream_kind()), (CameraOutcome::Refused, UpstreamErrorKind::Garbage));
        let garbage = LinkFailure::tunnel(&CameraTunnelError::NotHttp);
        assert!(garbage.reason.starts_with("HTTP tunnel: "), "{}", garbage.reason);
        assert_eq!(
            (garbage.outcome(), garbage.upstream_kind()),
            (CameraOutcome::ProtocolError, UpstreamErrorKind::Garbage)
        );
    }
}
