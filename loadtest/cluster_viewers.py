#!/usr/bin/env python3
"""Reconnecting tunnel viewers for loadtest/cluster.sh (standard library only).

`run`: N RTSP-over-HTTP tunnel viewers over M paths from several source addresses. Each opens
the GET and the POST, runs OPTIONS, DESCRIBE, SETUP (interleaved), PLAY, waits for its first
media frame, and then keeps reading (GET_PARAMETER every 20 s). When its tunnel ends it
reconnects at once with a new cookie (retrying every 200 ms), as a surveillance client does,
and notes when it ended and when media flowed again. On SIGTERM it writes every viewer's story
as JSON. `report`: reads that JSON, the kill time and the HAProxy log and prints what ended,
what reconnected and how long it took.
"""

import argparse
import asyncio
import base64
import ipaddress
import json
import random
import re
import signal
import sys
import time


def now():
    return time.time()


class SetupError(Exception):
    pass


class Viewer:
    def __init__(self, idx, target, path, source):
        self.idx, self.target, self.path, self.source = idx, target, path, source
        self.established = []  # times media started (first, then after each reconnect)
        self.ended = []  # times a playing tunnel ended
        self.failures = []  # setup failures: reason strings
        self.attempts = 0

    async def session(self, stop):
        host, port = self.target
        cookie = "cl%06d%08x" % (self.idx, random.getrandbits(32))
        self.attempts += 1
        local = (self.source, 0) if self.source else None
        gr, gw = await asyncio.open_connection(host, port, local_addr=local)
        pw = None
        try:
            gw.write(
                (f"GET {self.path} HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n"
                 "Accept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n").encode())
            try:
                head = await asyncio.wait_for(gr.readuntil(b"\r\n\r\n"), 5)
            except asyncio.IncompleteReadError:
                # Refused before any answer: the balancer found no node (or a dead one).
                raise SetupError("get_closed")
            if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
                raise SetupError("get_" + head.split(b" ")[1].decode(errors="replace"))
            _, pw = await asyncio.open_connection(host, port, local_addr=local)
            pw.write(
                (f"POST {self.path} HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n"
                 "Content-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\nPragma: no-cache\r\n\r\n").encode())
            reader = Stream(gr)
            base = f"rtsp://{host}:{port}{self.path}"
            cseq = [0]

            async def request(method, url, extra=""):
                cseq[0] += 1
                msg = f"{method} {url} RTSP/1.0\r\nCSeq: {cseq[0]}\r\nUser-Agent: cluster-viewer\r\n{extra}\r\n"
                pw.write(base64.b64encode(msg.encode()))
                await pw.drain()
                while True:
                    kind, head, body = await asyncio.wait_for(reader.next(), 5)
                    if kind == "msg" and re.search(rb"(?im)^cseq:\s*%d\s*$" % cseq[0], head):
                        status = int(head.split(b" ")[1])
                        if status != 200:
                            raise SetupError(f"{method.lower()}_{status}")
                        return head, body

            try:
                await request("OPTIONS", base)
            except asyncio.TimeoutError:
                # The GET was answered but nothing comes back for the POST's request: the POST
                # did not find its GET (another node, or refused).
                raise SetupError("pairing")
            head, sdp = await request("DESCRIBE", base, "Accept: application/sdp\r\n")
            m = re.search(rb"(?im)^content-base:\s*(\S+)", head)
            content_base = m.group(1).decode() if m else base + "/"
            controls = re.findall(rb"a=control:(\S+)", sdp.split(b"m=", 1)[-1])
            control = controls[0].decode() if controls else ""
            url = control if control.startswith("rtsp://") else content_base.rstrip("/") + "/" + control
            head, _ = await request("SETUP", url, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
            session = re.search(rb"(?im)^session:\s*([^;\r\n]+)", head).group(1).decode()
            await request("PLAY", base + "/", f"Session: {session}\r\nRange: npt=0.000-\r\n")
            while True:
                kind, _, _ = await asyncio.wait_for(reader.next(), 5)
                if kind == "frame":
                    break
            self.established.append(now())
            next_keepalive = now() + 20
            while not stop.is_set():
                try:
                    kind, _, _ = await asyncio.wait_for(reader.next(), 1)
                except asyncio.TimeoutError:
                    pass
                if now() >= next_keepalive:
                    next_keepalive = now() + 20
                    cseq[0] += 1
                    msg = f"GET_PARAMETER {base}/ RTSP/1.0\r\nCSeq: {cseq[0]}\r\nSession: {session}\r\n\r\n"
                    pw.write(base64.b64encode(msg.encode()))
            return True
        finally:
            for w in (gw, pw):
                if w is not None:
                    w.close()

    async def run(self, stop):
        while not stop.is_set():
            playing = len(self.established)
            try:
                if await self.session(stop):
                    return
            except SetupError as e:
                self.failures.append(str(e))
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
                if len(self.established) == playing:
                    self.failures.append(type(e).__name__)
            if len(self.established) > playing and not stop.is_set():
                self.ended.append(now())
            await asyncio.sleep(0.2)


class Stream:
    """RTSP messages and `$` frames from the GET."""

    def __init__(self, r):
        self.r, self.buf = r, b""

    async def fill(self, n):
        while len(self.buf) < n:
            chunk = await self.r.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(self.buf, n)
            self.buf += chunk

    async def next(self):
        await self.fill(1)
        if self.buf[:1] == b"$":
            await self.fill(4)
            n = 4 + int.from_bytes(self.buf[2:4], "big")
            await self.fill(n)
            self.buf = self.buf[n:]
            return "frame", None, None
        while b"\r\n\r\n" not in self.buf:
            await self.fill(len(self.buf) + 1)
        end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:end]
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        total = end + (int(m.group(1)) if m else 0)
        await self.fill(total)
        body = self.buf[end:total]
        self.buf = self.buf[total:]
        return "msg", head, body


def source_range(spec):
    if not spec:
        return [None]
    a, _, b = spec.partition("-")
    a, b = ipaddress.IPv4Address(a), ipaddress.IPv4Address(b or a)
    return [str(ipaddress.IPv4Address(n)) for n in range(int(a), int(b) + 1)]


async def run(args):
    host, port = args.target.rsplit(":", 1)
    sources = source_range(args.sources)
    viewers = [
        Viewer(i, (host, int(port)), f"{args.prefix}{i % args.paths}", sources[i % len(sources)])
        for i in range(args.sessions)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    tasks = []
    for v in viewers:
        if stop.is_set():
            break
        tasks.append(asyncio.create_task(v.run(stop)))
        await asyncio.sleep(1 / args.ramp)
    await stop.wait()
    await asyncio.wait(tasks, timeout=5)
    out = [
        {"path": v.path, "source": v.source, "established": v.established, "ended": v.ended,
         "failures": v.failures, "attempts": v.attempts}
        for v in viewers
    ]
    with open(args.out, "w") as f:
        json.dump(out, f)


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def report(args):
    viewers = json.load(open(args.viewers))
    kill_at = float(open(args.kill_at).read())
    # logasap lines: "... relays/relay2 route=/cam7 ..." at each connection's start.
    node_of = {}
    for line in open(args.haproxy_log, errors="replace"):
        m = re.search(r" relays/(\S+) route=(\S+) ", line)
        if m:
            node_of.setdefault(m.group(2), set()).add(m.group(1))
    ended = [v for v in viewers if any(t >= kill_at for t in v["ended"])]
    ended_before = [v for v in viewers if any(t < kill_at for t in v["ended"])]
    on_killed = {p for p, nodes in node_of.items() if args.killed in nodes}
    ended_paths = {v["path"] for v in ended}
    reconnected = [v for v in ended if any(t > max(v["ended"]) for t in v["established"])]
    delays = [min(t for t in v["established"] if t > max(v["ended"])) - max(v["ended"]) for v in reconnected]
    since_kill = [min(t for t in v["established"] if t > max(v["ended"])) - kill_at for v in reconnected]
    moved = {p: sorted(node_of.get(p, ())) for p in ended_paths}
    print(f"killed {args.killed}; viewers of its {len(on_killed)} paths before the kill: "
          f"{sum(1 for v in viewers if v['path'] in on_killed)}")
    print(f"ended after the kill: {len(ended)} viewers on {len(ended_paths)} paths "
          f"({len(ended_paths - on_killed)} paths not on {args.killed}); ended before the kill: {len(ended_before)}")
    print(f"reconnected and playing again: {len(reconnected)} of {len(ended)}")
    if delays:
        print("reconnection (tunnel ended -> media again), s: p50 %.2f  p99 %.2f  max %.2f" %
              (quantile(delays, .5), quantile(delays, .99), max(delays)))
        print("kill -> last viewer playing again, s: %.2f" % max(since_kill))
    now_on = {}
    for nodes in moved.values():
        for n in nodes:
            if n != args.killed:
                now_on[n] = now_on.get(n, 0) + 1
    print(f"its paths are now served by: {dict(sorted(now_on.items()))}")
    failures = {}
    for v in viewers:
        for f in v["failures"]:
            failures[f] = failures.get(f, 0) + 1
    print(f"setup failures by reason (all attempts, the kill's refused reconnects included): {failures or 0}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", required=True)
    r.add_argument("--sessions", type=int, default=100)
    r.add_argument("--paths", type=int, default=10)
    r.add_argument("--prefix", default="/cam")
    r.add_argument("--sources", default="")
    r.add_argument("--ramp", type=float, default=200.0)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--viewers", required=True)
    p.add_argument("--kill-at", required=True)
    p.add_argument("--haproxy-log", required=True)
    p.add_argument("--killed", required=True)
    args = ap.parse_args()
    if args.cmd == "run":
        asyncio.run(run(args))
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(main())
