//! The relay at its open-file limit (issue 25 item 5): more tunnels attempted than its
//! descriptors hold. It must degrade, not collapse: the connections over `[limits]
//! max_connections` (derived from `RLIMIT_NOFILE` here) are answered `503` with `Retry-After`
//! at once, the tunnels it admitted all reach their camera and play, and it accepts again once
//! they end.

mod fake;
mod support;

use std::io::Read;
use std::time::Duration;

use fake::*;
use support::*;

/// Tunnels attempted: GET and POST each, then a camera connection per admitted tunnel
/// (passthrough), far more than 150 descriptors hold.
const ATTEMPTS: usize = 80;

#[test]
fn past_the_open_file_limit_extra_tunnels_are_refused_and_admitted_ones_play() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let route = format!("[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\n", camera.url("/stream"));
    // 150 descriptors: the derived cap is (150 - 48) / 3 * 2 = 68 sockets.
    let relay = RelayProcess::start_wrapped("fd-budget", &route, &["prlimit", "--nofile=150:150", "--"]);

    // A burst: every tunnel's GET and POST before any of them plays, so the admitted ones all
    // still need their camera connection when the refusals start.
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..ATTEMPTS {
        let mut v = TunnelViewer::open_get(relay.tunnel, "/cam1", &format!("budget{i:06}"));
        if !v.reply_head.starts_with("HTTP/1.0 200") {
            // Unanswered (5 s) means accepting stalled: no point waiting on the rest.
            let stalled = v.reply_head.is_empty();
            refused.push(v.reply_head);
            if stalled {
                break;
            }
            continue;
        }
        v.open_post();
        admitted.push(v);
    }
    // A POST is never answered unless refused; the refused ones have their answer by now.
    std::thread::sleep(Duration::from_millis(300));
    let mut paired = Vec::new();
    let mut posts_refused = 0;
    for mut v in admitted {
        let post = v.post.as_mut().unwrap();
        post.set_nonblocking(true).unwrap();
        let mut head = [0u8; 256];
        match post.read(&mut head) {
            Ok(n) if n > 0 => {
                posts_refused += 1;
                refused.push(String::from_utf8_lossy(&head[..n]).into_owned());
            }
            _ => {
                post.set_nonblocking(false).unwrap();
                paired.push(v);
            }
        }
    }
    let mut admitted = paired;
    assert!(!refused.is_empty(), "all {ATTEMPTS} tunnels admitted under 150 descriptors:\n{}", relay.log_text());
    for head in &refused {
        assert!(head.starts_with("HTTP/1.0 503 Service Unavailable\r\n"), "refusal {head:?}");
        assert!(head.contains("\r\nRetry-After: 1\r\n"), "refusal {head:?}");
    }
    // New tunnels are refused while there is room left for the POSTs of tunnels begun.
    assert_eq!(posts_refused, 0, "a tunnel's GET was admitted and its POST refused");
    assert!(admitted.len() >= 10, "only {} of {ATTEMPTS} tunnels admitted", admitted.len());

    // Every admitted tunnel reaches its camera (a descriptor of the reserve each) and plays.
    for (i, v) in admitted.iter_mut().enumerate() {
        let answers = v.play();
        let statuses: Vec<_> = answers.iter().map(|m| m.status()).collect();
        assert!(statuses.iter().all(|s| *s == Some(200)), "tunnel {i}: {statuses:?}\n{}", relay.log_text());
    }
    for (i, v) in admitted.iter_mut().enumerate() {
        assert!(v.read_frames(3, Duration::from_secs(10)) >= 3, "tunnel {i} got no media\n{}", relay.log_text());
    }
    let log = relay.log_text();
    assert!(!log.contains("out of file descriptors"), "the relay ran out of descriptors:\n{log}");
    let scrape = relay.scrape();
    let counted = metric_value(&scrape, "relay_rejections_total{reason=\"max_connections\"}");
    assert!(counted >= refused.len() as f64, "{counted} counted, {} refused", refused.len());

    // Once they end, the relay admits new tunnels again.
    let had = admitted.len();
    drop(admitted);
    let mut tries = 0;
    let again = eventually(Duration::from_secs(10), || {
        tries += 1;
        let mut v = TunnelViewer::open_get(relay.tunnel, "/cam1", &format!("afterwards{tries:04}"));
        if !v.reply_head.starts_with("HTTP/1.0 200") {
            return false;
        }
        v.open_post();
        v.play().iter().all(|m| m.status() == Some(200)) && v.read_frames(3, Duration::from_secs(5)) >= 3
    });
    assert!(again, "no tunnel admitted after the {had} admitted ones ended\n{}", relay.log_text());
}
