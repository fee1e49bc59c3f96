#!/usr/bin/python3
"""Opt-in measurement (issue 26): N always-on shared routes whose cameras all drop at once, and
how their reconnects spread over time, counted at the camera side by the load-test camera.

Usage: scripts/reconnect-storm.py [--routes 5000] [--down 3] [--seconds 40]
           [--relay target/release/rtsp-tunnel-relay] [--loadtest target/release/loadtest]

One `loadtest camera` process serves /cam0../camN-1 (a trickle of media: 1 picture a second);
the relay has N always-on shared routes on it. Once every route plays, the camera process is
stopped (every camera connection drops in the same instant), left down --down seconds (the
relay's connects are refused meanwhile and back off), and started again. The camera's
`--accept-log` counts accepted connections every 100 ms; printed: connects per second from the
restart on, the peak second and the peak 100 ms window (as a rate), and the seconds until N
connections were accepted again.
Descriptors: N camera connections in the relay and N in the camera, well under 20,000 at 5,000.
Bounded: stops the relay and the camera after --seconds.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_log(path):
    lines = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    lines.append((int(parts[0]) / 1000.0, int(parts[1])))
    except FileNotFoundError:
        pass
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=5000)
    ap.add_argument("--down", type=float, default=3.0, help="seconds the camera process stays stopped")
    ap.add_argument("--seconds", type=float, default=40.0, help="seconds observed after the restart")
    ap.add_argument("--relay", default="target/release/rtsp-tunnel-relay")
    ap.add_argument("--loadtest", default="target/release/loadtest")
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="rtr-storm-")
    cam_port, tunnel = free_port(), free_port()
    accept_log = os.path.join(d, "accepts.txt")
    cam_log = open(os.path.join(d, "camera.log"), "w")

    def start_camera():
        return subprocess.Popen(
            [args.loadtest, "camera", "--listen", "127.0.0.1:%d" % cam_port, "--streams", str(args.routes),
             "--bitrate", "1k", "--fps", "1", "--gop", "10", "--accept-log", accept_log,
             "--accept-log-every", "100ms"],
            stdout=cam_log, stderr=cam_log)

    routes = "".join(
        '[[route]]\npath = "/c%d"\nupstream = "rtsp://127.0.0.1:%d/cam%d"\nalways_on = true\n' % (i, cam_port, i)
        for i in range(args.routes)
    )
    conf = '[listen]\ntunnel = ["127.0.0.1:%d"]\n[runtime]\nshards = 2\n%s' % (tunnel, routes)
    path = os.path.join(d, "relay.toml")
    with open(path, "w") as f:
        f.write(conf)
    log = open(os.path.join(d, "relay.log"), "w")
    camera = start_camera()
    time.sleep(0.5)
    relay = subprocess.Popen([args.relay, "--config", path], stdout=log, stderr=log,
                             env={**os.environ, "RUST_LOG": "warn"})
    try:
        # Every route connected (the first wave: the relay's start-up, not measured).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sum(n for _, n in read_log(accept_log)) >= args.routes:
                break
            time.sleep(0.5)
        else:
            print("only %d of %d routes connected; see %s" % (sum(n for _, n in read_log(accept_log)), args.routes, d))
            return 1
        time.sleep(3)  # playing for a while: the drop is a first failure
        camera.send_signal(signal.SIGKILL)
        camera.wait()
        dropped = time.time()
        time.sleep(args.down)
        camera = start_camera()
        restarted = time.time()
        time.sleep(args.seconds)
    finally:
        for p in (relay, camera):
            p.send_signal(signal.SIGTERM)
        for p in (relay, camera):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    after = [(t - restarted, n) for t, n in read_log(accept_log) if t > restarted]
    per_second = [0] * (int(args.seconds) + 2)
    for t, n in after:
        # A line counts what was accepted in the 100 ms before it.
        per_second[min(int(max(t - 0.05, 0)), len(per_second) - 1)] += n
    while len(per_second) > 1 and per_second[-1] == 0:
        per_second.pop()
    total, done_at = 0, None
    for t, n in after:
        total += n
        if done_at is None and total >= args.routes:
            done_at = t
    print("%d routes; camera killed, down %.1f s, restarted; %d connects in the %.0f s after the restart"
          % (args.routes, restarted - dropped, total, args.seconds))
    print("connects per second after the restart:", per_second)
    if after:
        peak = max(per_second)
        window = max(n for _, n in after)
        print("peak second: %d connects (%.0f%% of the routes); peak 100 ms: %d (%.0f/s); all %d back after %s"
              % (peak, 100.0 * peak / args.routes, window, window * 10.0, args.routes,
                 "%.1f s" % done_at if done_at is not None else "more than %.0f s" % args.seconds))
        print("per 100 ms until then:", [n for t, n in after if done_at is None or t <= done_at + 0.1])
    print("logs in", d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
