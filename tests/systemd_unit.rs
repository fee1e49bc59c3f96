//! The systemd unit: `systemd-analyze verify` accepts it and its sandbox scores well.

use std::process::Command;

#[test]
fn the_unit_verifies_and_is_sandboxed() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze not installed (scripts/install-test-deps.sh)");
        return;
    }
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/rtsp-tunnel-relay.service")).unwrap();
    for needed in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "io_uring_setup",
    ] {
        assert!(unit.contains(needed), "unit lacks {needed}");
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = std::env::temp_dir().join(format!("rtr-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rtsp-tunnel-relay.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/rtsp-tunnel-relay", env!("CARGO_BIN_EXE_rtsp-tunnel-relay")))
        .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "verify: {text}");
    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for rtsp-tunnel-relay.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 2.5, "exposure {score} (want OK, 2.5 or less)");
}
