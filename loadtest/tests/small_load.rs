//! A small load in the default test run: the load generator against its own cameras, then 200
//! tunnel sessions through an in-process relay. Every session must be established and no
//! packet lost. (Speed is measured by the full runs in the README, never asserted here.)

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtsp_tunnel_relay::config::{Acl, ListenerSettings, Runtime, Settings};
use rtsp_tunnel_relay::metrics::ShardMetrics;
use rtsp_tunnel_relay::shard::{Shards, StartOptions};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_cameras(streams: u32) -> (Killed, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["camera", "--listen", &addr.to_string(), "--streams", &streams.to_string(), "--bitrate", "500k"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < end, "cameras did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), addr)
}

fn viewers(target: SocketAddr, mode: &str, sessions: usize, paths: usize) -> serde_json::Value {
    viewers_with(target, mode, sessions, paths, &[])
}

fn viewers_with(target: SocketAddr, mode: &str, sessions: usize, paths: usize, extra: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("lt-test-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new("timeout")
        .args([
            "-k",
            "5",
            "90",
            env!("CARGO_BIN_EXE_loadtest"),
            "viewers",
            "--target",
            &target.to_string(),
            "--mode",
            mode,
        ])
        .args([
            "--sessions",
            &sessions.to_string(),
            "--paths",
            &paths.to_string(),
            "--ramp",
            "500/s",
            "--duration",
            "3s",
        ])
        .args(["--source-ips", "127.0.0.2-127.0.0.9", "--json", json.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "viewers: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn assert_clean(report: &serde_json::Value, sessions: u64) {
    assert_eq!(report["sessions_established"], sessions, "{report:#}");
    assert_eq!(report["sessions_failed"], 0, "{:#}", report["failures_by_reason"]);
    assert_eq!(report["packets_lost"], 0);
    assert!(
        report["packets_received"].as_u64().unwrap() > sessions * 10,
        "too little media: {}",
        report["packets_received"]
    );
}

#[test]
fn viewers_against_the_cameras_directly() {
    let (_cams, addr) = start_cameras(20);
    let report = viewers(addr, "rtsp", 20, 20);
    assert_clean(&report, 20);
}

/// An in-process relay routing /cam0.. to the cameras, with an HTTPS listener when `tls`.
fn relay(cams: SocketAddr, streams: usize, tls: bool) -> Shards {
    let mut text = String::from("[listen]\ntunnel=[\"127.0.0.1:0\"]\n");
    for i in 0..streams {
        text.push_str(&format!("[[route]]\npath=\"/cam{i}\"\nupstream=\"rtsp://{cams}/cam{i}\"\n"));
    }
    let mut settings = Settings::from_toml(&text).unwrap();
    settings.runtime = Runtime { shards: 2, recv_buffers: 1024, ..Runtime::default() };
    if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("lt-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), ck.key_pair.serialize_pem()).unwrap();
        let config = rtsp_tunnel_relay::tls::load_server_config(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        let addr = "127.0.0.1:0".parse().unwrap();
        settings.listeners.push(ListenerSettings { addr, acl: Acl::default(), tls: Some(config) });
    }
    Shards::start(StartOptions {
        settings: Arc::new(settings),
        metrics: (0..2).map(|i| Arc::new(ShardMetrics::new(i))).collect(),
    })
    .unwrap()
}

#[test]
fn two_hundred_tunnel_sessions_through_the_relay() {
    let (_cams, cams) = start_cameras(200);
    let relay = relay(cams, 200, false);
    let report = viewers(relay.local_addrs()[0], "tunnel", 200, 200);
    assert_clean(&report, 200);
    relay.shutdown(Duration::from_millis(200));
}

#[test]
fn https_tunnel_sessions_through_the_relay() {
    let (_cams, cams) = start_cameras(50);
    let relay = relay(cams, 50, true);
    let report = viewers_with(relay.local_addrs()[1], "tunnel", 50, 50, &["--tls"]);
    assert_clean(&report, 50);
    relay.shutdown(Duration::from_millis(200));
}
