#!/usr/bin/python3
"""Opt-in measurement (issue 26): N always-on shared routes whose cameras all drop at once, and
how their reconnects spread over time, counted at the camera side.

Usage: scripts/reconnect-storm.py [--routes 5000] [--seconds 20] [--relay target/release/rtsp-tunnel-relay]

A stand-in camera on 127.0.0.1 accepts every connection and closes it at once (every camera
"drops" on its first request), so all N camera sessions fail in the same instant and each then
retries on its backoff: 1 s doubling up to [limits] camera_reconnect_max_ms, each wait shortened
at random by up to half. Prints accepted connections per 100 ms window and per second, and the
peak 100 ms window of each retry wave. Bounded: stops the relay and itself after --seconds.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--relay", default="target/release/rtsp-tunnel-relay")
    args = ap.parse_args()

    cam = socket.socket()
    cam.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    cam.bind(("127.0.0.1", 0))
    cam.listen(65535)
    cam.settimeout(0.05)
    port = cam.getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    tunnel = probe.getsockname()[1]
    probe.close()

    routes = "".join(
        '[[route]]\npath = "/c%d"\nupstream = "rtsp://127.0.0.1:%d/cam%d"\nalways_on = true\n' % (i, port, i)
        for i in range(args.routes)
    )
    conf = '[listen]\ntunnel = ["127.0.0.1:%d"]\n[runtime]\nshards = 2\n[limits]\nmax_connections_per_ip = 100000\n%s' % (
        tunnel,
        routes,
    )
    d = tempfile.mkdtemp(prefix="rtr-storm-")
    path = os.path.join(d, "relay.toml")
    with open(path, "w") as f:
        f.write(conf)
    log = open(os.path.join(d, "relay.log"), "w")
    relay = subprocess.Popen([args.relay, "--config", path], stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    accepts = []
    t0 = None
    try:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            try:
                conn, _ = cam.accept()
            except socket.timeout:
                continue
            now = time.monotonic()
            if t0 is None:
                t0 = now
            accepts.append(now - t0)
            # Dropped at once: a reset, as when a camera loses power.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    if not accepts:
        print("no connection reached the camera; see", log.name)
        return 1
    windows = {}
    for t in accepts:
        windows[int(t * 10)] = windows.get(int(t * 10), 0) + 1
    print("%d routes, %d connects in %.1f s (first wave = the initial connects, all at once)" % (args.routes, len(accepts), args.seconds))
    print("per second:", [sum(windows.get(s * 10 + i, 0) for i in range(10)) for s in range(int(args.seconds))])
    print("per 100 ms (window start s: connects):")
    print(" ".join("%.1f:%d" % (w / 10, n) for w, n in sorted(windows.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
