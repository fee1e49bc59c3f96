//! The relay as a new operator first meets it, from the binary: `-h` and `--help` say the same;
//! the demo's ports come from the command line; a bare `curl` of the tunnel port is told what
//! the port is; the route list gives each route's URLs to copy; a camera name that does not
//! resolve is a warning, not a rejected file; the metrics port is not node_exporter's 9100.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rtsp-tunnel-relay");

fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn short_and_long_help_agree_and_name_the_demo_ports() {
    let short = stdout_of(&["-h"]);
    assert_eq!(short, stdout_of(&["--help"]), "-h and --help differ");
    for needed in ["--listen", "--metrics-listen", "127.0.0.1:8079", "/demo"] {
        assert!(short.contains(needed), "help lacks {needed}:\n{short}");
    }
    assert!(!short.contains("9100"), "{short}");
}

/// The demo, killed on drop.
struct Demo {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_demo_listens_where_the_command_line_says_and_explains_its_port() {
    let (tunnel, metrics) = (free_port(), free_port());
    let log = temp_dir("demo").join("relay.log");
    let demo = Demo {
        child: Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{tunnel}"), "--metrics-listen", &metrics.to_string()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    let metrics: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let ready = eventually(Duration::from_secs(10), || {
        http_get(metrics, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let log_text = || std::fs::read_to_string(&demo.log).unwrap_or_default();
    assert!(ready, "demo not ready on the metrics port given; log:\n{}", log_text());
    let at = format!("127.0.0.1:{tunnel}");
    assert!(log_text().contains(&format!("rtsp://{at}/demo")), "{}", log_text());

    // A bare curl of the tunnel port: what is this port, and how is a route played?
    let out = Command::new("curl").args(["-s", "-i", "--max-time", "5", &format!("http://{at}/")]).output();
    let reply = match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        // No curl: the same request by hand.
        Err(_) => {
            let mut s = TcpStream::connect(&at).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET / HTTP/1.1\r\nHost: {at}\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n").unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            reply
        }
    };
    assert!(reply.starts_with("HTTP/1.0 400"), "{reply}");
    assert!(reply.contains("tunnel port") && reply.contains("ffplay -rtsp_transport http rtsp://"), "{reply}");

    // The route list (what a browser opening the port gets): each route's URLs to copy.
    let mut s = TcpStream::connect(&at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: {at}\r\nAccept: text/html\r\n\r\n").unwrap();
    let mut page = Vec::new();
    let mut buf = [0u8; 16384];
    while !String::from_utf8_lossy(&page).contains("</html>") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => page.extend_from_slice(&buf[..n]),
        }
    }
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for url in [format!("<code>rtsp://{at}/demo</code>"), format!("<code>http://{at}/demo</code>")] {
        assert!(page.contains(&url), "route list lacks {url}:\n{page}");
    }
}

#[test]
fn a_camera_name_that_does_not_resolve_is_a_warning_not_a_bad_file() {
    let dir = temp_dir("unresolved");
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        "[listen]\ntunnel = [\"127.0.0.1:1\"]\n\
         [[route]]\npath = \"/gone\"\nupstream = \"rtsp://camera.invalid/stream\"\n\
         [[route]]\npath = \"/here\"\nupstream = \"rtsp://127.0.0.1:554/stream\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["--config", file.to_str().unwrap(), "--check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok (2 routes)"), "{text}");
    assert!(text.contains("warning: route \"/gone\": cannot resolve camera.invalid"), "{text}");
}

#[test]
fn no_shipped_file_puts_the_metrics_port_on_9100() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "README.md",
        "examples/relay.toml",
        "deploy/debian/relay.toml",
        "deploy/haproxy/haproxy.cfg",
        "deploy/haproxy/README.md",
        "deploy/prometheus/prometheus.yml",
        "systemd/rtsp-tunnel-relay.service",
        "scripts/test-deb.sh",
        "src/main.rs",
        "src/app.rs",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        // The README says why not 9100; no file listens or checks there.
        for used in [":9100", "port 9100", "9100/"] {
            assert!(!text.contains(used), "{file} still uses port 9100 ({used})");
        }
    }
    let example = std::fs::read_to_string(format!("{root}/examples/relay.toml")).unwrap();
    assert!(example.contains("metrics = \"127.0.0.1:8079\""), "examples/relay.toml");
    let haproxy = std::fs::read_to_string(format!("{root}/deploy/haproxy/haproxy.cfg")).unwrap();
    assert!(haproxy.contains("check port 8079"), "HAProxy checks /readyz on the metrics port");
}
