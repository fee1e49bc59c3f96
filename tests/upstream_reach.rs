//! Reaching cameras the ways they allow (issue 26), against real gst-rtsp-server cameras:
//! RTSPS with the right CA, a wrong CA (the camera's state says why) and a pinned fingerprint.
//!
//! Each test runs its own camera and relay, is bounded in time, and stops every peer it starts.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// A CA, and a leaf for 127.0.0.1 it signs: (CA PEM, leaf cert PEM, leaf key PEM, leaf DER).
fn ca_and_leaf() -> (String, String, String, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "relay test camera CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "camera");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem(), leaf.der().to_vec())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A gst-rtsp-server camera serving RTSPS with a leaf its own CA signed: (camera, CA path,
/// the leaf's SHA-256 in hex).
fn tls_camera(name: &str) -> (GstCamera, PathBuf, String, PathBuf) {
    let dir = temp_dir(name);
    let (ca, cert, key, der) = ca_and_leaf();
    let ca = write(&dir, "ca.pem", &ca);
    let cert = write(&dir, "cert.pem", &cert);
    let key = write(&dir, "key.pem", &key);
    let camera = GstCamera::start_args(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    (camera, ca, sha256_hex(&der), dir)
}

fn rtsps_route(path: &str, camera: &GstCamera, mode: &str, extra: &str) -> String {
    format!(
        "[[route]]\npath = \"{path}\"\nupstream = \"rtsps://127.0.0.1:{}/cam1\"\nmode = \"{mode}\"\n{extra}\n",
        camera.port
    )
}

#[test]
fn rtsps_camera_verified_by_its_ca_plays_shared_and_passthrough() {
    require_peers!();
    let (camera, ca, _, _) = tls_camera("rtsps-ca");
    let ca = format!("upstream_ca = \"{}\"", ca.display());
    let body = rtsps_route("/shared", &camera, "shared", &ca) + &rtsps_route("/own", &camera, "passthrough", &ca);
    let relay = RelayProcess::start("rtsps-ca", &body);
    for path in ["/shared", "/own"] {
        let out = ffmpeg_play("http", &relay.url(path), 25);
        assert!(
            ffmpeg_frames(&out) >= 25,
            "{path}: {}\nrelay:\n{}\ncamera: {:?}",
            describe(&out),
            relay.log_text(),
            camera.events()
        );
    }
    assert_eq!(relay.metric("relay_upstream_insecure_tls_total"), 0.0);
}

#[test]
fn rtsps_camera_signed_by_another_ca_is_a_tls_failure_with_its_reason() {
    require_peers!();
    let (camera, _, _, dir) = tls_camera("rtsps-wrong");
    let (other_ca, _, _, _) = ca_and_leaf();
    let other = write(&dir, "other-ca.pem", &other_ca);
    let ca = format!("upstream_ca = \"{}\"", other.display());
    let body = rtsps_route("/shared", &camera, "shared", &ca) + &rtsps_route("/own", &camera, "passthrough", &ca);
    let relay = RelayProcess::start("rtsps-wrong", &body);
    let out = ffmpeg_play("http", &relay.url("/own"), 5);
    assert_eq!(ffmpeg_frames(&out), 0, "{}", describe(&out));
    let out = run_limited(8, &["ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", "http", "-i", &relay.url("/shared"), "-an", "-frames:v", "5", "-f", "null", "-"]);
    assert_eq!(ffmpeg_frames(&out), 0, "{}", describe(&out));
    let failed = eventually(Duration::from_secs(10), || {
        relay.metric("relay_camera_sessions_total{outcome=\"tls_failed\"}") >= 1.0
            && relay.metric("relay_upstream_errors_total{reason=\"tls_failed\"}") >= 1.0
    });
    let log = relay.log_text();
    assert!(failed, "no tls_failed counted:\n{}\n{log}", relay.scrape());
    assert!(log.contains("camera TLS failed") && log.contains("not trusted"), "{log}");
    // The camera never got as far as an RTSP request.
    assert!(camera.requests().is_empty(), "{:?}", camera.events());
}

#[test]
fn rtsps_camera_pinned_by_fingerprint_plays_without_a_ca() {
    require_peers!();
    let (camera, _, fingerprint, _) = tls_camera("rtsps-pin");
    let pin = format!("upstream_fingerprint = \"sha256:{fingerprint}\"");
    let wrong = format!("upstream_fingerprint = \"sha256:{}\"", "00".repeat(32));
    let body = rtsps_route("/pinned", &camera, "shared", &pin) + &rtsps_route("/wrong", &camera, "passthrough", &wrong);
    let relay = RelayProcess::start("rtsps-pin", &body);
    let out = ffmpeg_play("http", &relay.url("/pinned"), 25);
    assert!(ffmpeg_frames(&out) >= 25, "{}\n{}", describe(&out), relay.log_text());
    let out = ffmpeg_play("http", &relay.url("/wrong"), 5);
    assert_eq!(ffmpeg_frames(&out), 0, "{}", describe(&out));
    let log = relay.log_text();
    assert!(log.contains("does not match upstream_fingerprint"), "{log}");
}
