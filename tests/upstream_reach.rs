//! Reaching cameras the ways they allow (issue 26), against real gst-rtsp-server cameras:
//! RTSPS with the right CA, a wrong CA (the camera's state says why) and a pinned fingerprint;
//! a camera behind an HTTP-only proxy reached by the tunnel's GET and POST.
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
    let body = "[metrics]\nper_route = true\n".to_owned()
        + &rtsps_route("/shared", &camera, "shared", &ca)
        + &rtsps_route("/own", &camera, "passthrough", &ca);
    let relay = RelayProcess::start("rtsps-wrong", &body);
    let out = ffmpeg_play("http", &relay.url("/own"), 5);
    assert_eq!(ffmpeg_frames(&out), 0, "{}", describe(&out));
    let out = run_limited(
        8,
        &[
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-rtsp_transport",
            "http",
            "-i",
            &relay.url("/shared"),
            "-an",
            "-frames:v",
            "5",
            "-f",
            "null",
            "-",
        ],
    );
    assert_eq!(ffmpeg_frames(&out), 0, "{}", describe(&out));
    let failed = eventually(Duration::from_secs(10), || {
        relay.metric("relay_camera_sessions_total{outcome=\"tls_failed\"}") >= 1.0
            && relay.metric("relay_upstream_errors_total{reason=\"tls_failed\"}") >= 1.0
    });
    let log = relay.log_text();
    assert!(failed, "no tls_failed counted:\n{}\n{log}", relay.scrape());
    assert!(log.contains("camera link failed") && log.contains("not trusted"), "{log}");
    // The route's camera health says so too: its connection failed, the next one scheduled.
    let state = eventually(Duration::from_secs(10), || {
        let text = relay.scrape();
        ["retrying", "failed"].iter().any(|st| {
            let series = format!("relay_route_camera_state{{route=\"/shared\",state=\"{st}\"}} 1");
            text.lines().any(|l| l == series)
        })
    });
    assert!(state, "{}", relay.scrape());
    // A passthrough route's too: its viewer's camera connection failed at TLS.
    let own = relay.scrape().lines().any(|l| l == "relay_route_camera_state{route=\"/own\",state=\"failed\"} 1");
    assert!(own, "{}", relay.scrape());
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

/// What the HTTP-only proxy in front of a camera let through and refused.
#[derive(Debug, Default)]
struct ProxySeen {
    gets: usize,
    posts: usize,
    refused: Vec<String>,
}

/// A proxy that passes on only RTSP-over-HTTP tunnel heads (a GET or POST with an
/// `x-sessioncookie`) and refuses anything else, as an HTTP-only firewall would: the relay's
/// camera connections must all be tunnel halves. Accepts until the test ends.
fn http_only_proxy(camera_port: u16) -> (u16, std::sync::Arc<std::sync::Mutex<ProxySeen>>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(ProxySeen::default()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let record = record.clone();
            std::thread::spawn(move || {
                let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match client.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let tunnel = text.to_ascii_lowercase().contains("x-sessioncookie:");
                let is_get = text.starts_with("GET ") && tunnel;
                let is_post = text.starts_with("POST ") && tunnel;
                if !is_get && !is_post {
                    record.lock().unwrap().refused.push(text.lines().next().unwrap_or_default().to_owned());
                    let _ = client.write_all(b"HTTP/1.0 403 Forbidden\r\n\r\n");
                    return;
                }
                let mut s = record.lock().unwrap();
                if is_get {
                    s.gets += 1
                } else {
                    s.posts += 1
                }
                drop(s);
                let Ok(mut camera) = TcpStream::connect(("127.0.0.1", camera_port)) else { return };
                let _ = client.set_read_timeout(None);
                if camera.write_all(&head).is_err() {
                    return;
                }
                let (mut c2, mut cam2) = (client.try_clone().unwrap(), camera.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut cam2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let _ = std::io::copy(&mut client, &mut camera);
                let _ = camera.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, seen)
}

#[test]
fn camera_behind_an_http_only_proxy_is_reached_by_get_and_post() {
    require_peers!();
    let camera = GstCamera::start(Some(("cam", "secret")));
    let (proxy, seen) = http_only_proxy(camera.port);
    let upstream = format!("rtsp+http://cam:secret@127.0.0.1:{proxy}/cam1");
    let body = format!(
        "[[route]]\npath = \"/shared\"\nupstream = \"{upstream}\"\n\n[[route]]\npath = \"/own\"\nupstream = \"{upstream}\"\nmode = \"passthrough\"\n"
    );
    let relay = RelayProcess::start("rtsp-http-camera", &body);
    for (path, transport) in [("/shared", "http"), ("/own", "tcp")] {
        let out = ffmpeg_play(transport, &relay.url(path), 25);
        assert!(
            ffmpeg_frames(&out) >= 25,
            "{path}: {}\nrelay:\n{}\ncamera: {:?}\nproxy: {:?}",
            describe(&out),
            relay.log_text(),
            camera.events(),
            seen.lock().unwrap()
        );
    }
    let s = seen.lock().unwrap();
    assert!(s.refused.is_empty(), "the relay spoke something else than the tunnel: {:?}", s.refused);
    assert!(s.gets >= 2 && s.posts >= 2, "{s:?}");
    // The camera's Digest challenge was answered inside the tunnel.
    let requests = camera.requests();
    assert!(requests.iter().any(|r| r.starts_with("PLAY")), "{requests:?}");
}

/// One RTSP request on a plain connection to the relay, and the status line of its answer.
fn rtsp_status(stream: &mut std::net::TcpStream, url: &str, cseq: u32) -> String {
    use std::io::{Read, Write};
    let req = format!("OPTIONS {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: test\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_owned()
}

#[test]
fn passthrough_sessions_beyond_max_camera_sessions_are_answered_453() {
    require_peers!();
    let camera = GstCamera::start(None);
    let body = format!(
        "[limits]\nmax_camera_sessions = 1\n[[route]]\npath = \"/own\"\nupstream = \"{}\"\nmode = \"passthrough\"\n",
        camera.url("/cam1")
    );
    let relay = RelayProcess::start("camera-sessions", &body);
    let url = relay.url("/own");
    let mut first = std::net::TcpStream::connect(relay.tunnel).unwrap();
    assert_eq!(rtsp_status(&mut first, &url, 1), "RTSP/1.0 200 OK");
    let mut second = std::net::TcpStream::connect(relay.tunnel).unwrap();
    assert_eq!(rtsp_status(&mut second, &url, 1), "RTSP/1.0 453 Not Enough Bandwidth");
    assert_eq!(relay.metric("relay_rejections_total{reason=\"camera_session_limit\"}"), 1.0);
    assert_eq!(camera.clients(), 1, "the camera never heard of the second viewer: {:?}", camera.events());
    // The first viewer leaves: its camera session is released and the next one is served.
    drop(first);
    let served = eventually(Duration::from_secs(10), || {
        let mut third = std::net::TcpStream::connect(relay.tunnel).unwrap();
        rtsp_status(&mut third, &url, 1) == "RTSP/1.0 200 OK"
    });
    assert!(served, "{}", relay.log_text());
}

#[test]
fn rtsp_over_https_camera_is_verified_and_tunnelled() {
    require_peers!();
    let (camera, ca, _, _) = tls_camera("rtsp-https");
    let body = format!(
        "[[route]]\npath = \"/cam\"\nupstream = \"rtsp+https://127.0.0.1:{}/cam1\"\nupstream_ca = \"{}\"\n",
        camera.port,
        ca.display()
    );
    let relay = RelayProcess::start("rtsp-https-camera", &body);
    let out = ffmpeg_play("http", &relay.url("/cam"), 25);
    assert!(
        ffmpeg_frames(&out) >= 25,
        "{}\nrelay:\n{}\ncamera: {:?}",
        describe(&out),
        relay.log_text(),
        camera.events()
    );
}
