#!/usr/bin/python3
"""An ONVIF RTSP-over-WebSocket client for the tests: a full RTSP dialogue over subprotocol
rtsp.onvif.org with Python's websockets library, counting the RTP packets that arrive.

Usage: ws_rtsp_client.py ws://HOST:PORT/PATH [--seconds S] [--user U --password P]
       ws_rtsp_client.py ws://HOST:PORT/PATH --probe NAME
OPTIONS, DESCRIBE (Digest or Basic on a 401 when credentials are given), SETUP of the first video
track (RTP/AVP/TCP interleaved=0-1), PLAY, a GET_PARAMETER keepalive halfway, TEARDOWN, close
1000. Prints one JSON line: statuses of each request, rtp/rtcp packet counts, the RTP sequence
gaps seen, WebSocket messages received, and the close code. Exit 0 when PLAY was answered 200 and
RTP arrived, 1 otherwise.
--probe checks one framing rule instead and prints {"probe": NAME, ...}:
  no-subprotocol  upgrade without Sec-WebSocket-Protocol: "status" (400 expected)
  wrong-subprotocol  upgrade offering only "chat": "status"
  text            a text frame carrying OPTIONS: "close_code" (1003 expected)
  oversized       one binary frame of 8 MiB: "close_code" (1009 expected)
  fragmented      OPTIONS split over three fragments of one message: "status" of its answer
  ping            a ping: "pong" true when answered, then OPTIONS still answered ("status")
Needs python3-websockets (Debian) or websockets from PyPI (10.x or later).
"""
import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
import time

import websockets

SUBPROTOCOL = "rtsp.onvif.org"


class Client:
    def __init__(self, ws, url, user, password):
        self.ws = ws
        self.url = url
        self.user, self.password = user, password
        self.buf = b""
        self.cseq = 0
        self.session = None
        self.auth = None
        self.rtp = self.rtcp = self.messages = self.gaps = 0
        self.last_seq = None
        self.statuses = {}

    async def recv_some(self, timeout):
        msg = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(msg, str):
            raise RuntimeError("text message from the server")
        self.messages += 1
        self.buf += msg

    def take_frames(self):
        """Consumes `$` frames at the front of the buffer; returns when an RTSP message (or too
        little) is next."""
        while len(self.buf) >= 4 and self.buf[0] == 0x24:
            n = int.from_bytes(self.buf[2:4], "big")
            if len(self.buf) < 4 + n:
                return
            channel, payload = self.buf[1], self.buf[4 : 4 + n]
            self.buf = self.buf[4 + n :]
            if channel % 2 == 0:
                self.rtp += 1
                seq = int.from_bytes(payload[2:4], "big")
                if self.last_seq is not None and seq != (self.last_seq + 1) & 0xFFFF:
                    self.gaps += 1
                self.last_seq = seq
            else:
                self.rtcp += 1

    async def response(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            self.take_frames()
            end = self.buf.find(b"\r\n\r\n")
            if self.buf[:1] != b"$" and end >= 0:
                head = self.buf[:end].decode("utf-8", "replace")
                headers = {}
                for line in head.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    headers.setdefault(k.strip().lower(), []).append(v.strip())
                n = int(headers.get("content-length", ["0"])[0])
                if len(self.buf) >= end + 4 + n:
                    body = self.buf[end + 4 : end + 4 + n].decode("utf-8", "replace")
                    self.buf = self.buf[end + 4 + n :]
                    status = int(head.split(" ", 2)[1])
                    return status, headers, body
            await self.recv_some(max(0.1, deadline - time.monotonic()))

    def authorization(self, method, uri):
        if not self.auth:
            return None
        scheme, p = self.auth
        if scheme == "basic":
            import base64

            return "Basic " + base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1 = md5("%s:%s:%s" % (self.user, p["realm"], self.password))
        ha2 = md5("%s:%s" % (method, uri))
        fields = 'username="%s", realm="%s", nonce="%s", uri="%s"' % (self.user, p["realm"], p["nonce"], uri)
        if "auth" in p.get("qop", "").split(","):
            cnonce = os.urandom(8).hex()
            resp = md5("%s:%s:00000001:%s:auth:%s" % (ha1, p["nonce"], cnonce, ha2))
            fields += ', qop=auth, nc=00000001, cnonce="%s"' % cnonce
        else:
            resp = md5("%s:%s:%s" % (ha1, p["nonce"], ha2))
        fields += ', response="%s"' % resp
        if "opaque" in p:
            fields += ', opaque="%s"' % p["opaque"]
        return "Digest " + fields

    async def request(self, method, uri, headers=None):
        for attempt in range(2):
            self.cseq += 1
            lines = ["%s %s RTSP/1.0" % (method, uri), "CSeq: %d" % self.cseq, "User-Agent: ws_rtsp_client.py"]
            if self.session:
                lines.append("Session: %s" % self.session)
            a = self.authorization(method, uri)
            if a:
                lines.append("Authorization: " + a)
            lines += ["%s: %s" % kv for kv in (headers or {}).items()]
            await self.ws.send(("\r\n".join(lines) + "\r\n\r\n").encode())
            status, h, body = await self.response()
            if status == 401 and attempt == 0 and self.user is not None:
                challenges = h.get("www-authenticate", [])
                digest = [c for c in challenges if c.lower().startswith("digest")]
                chosen = (digest or challenges or [""])[0]
                scheme = chosen.split(" ", 1)[0].lower()
                params = dict((k.lower(), v1 or v2) for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', chosen))
                self.auth = (scheme, params)
                continue
            self.statuses[method] = status
            return status, h, body

    async def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                await self.recv_some(end - time.monotonic())
            except asyncio.TimeoutError:
                break
            self.take_frames()


async def run(args):
    m = re.match(r"wss?://([^/]+)(/.*)?$", args.url)
    rtsp_url = "rtsp://%s%s" % (m.group(1), m.group(2) or "/")
    result = {"url": args.url}
    async with websockets.connect(args.url, subprotocols=[SUBPROTOCOL], compression=None, max_size=1 << 22) as ws:
        result["subprotocol"] = ws.subprotocol
        c = Client(ws, rtsp_url, args.user, args.password)
        try:
            await c.request("OPTIONS", rtsp_url)
            status, h, sdp = await c.request("DESCRIBE", rtsp_url, {"Accept": "application/sdp"})
            if status == 200:
                base = (h.get("content-base") or [rtsp_url])[0]
                control = None
                in_video = False
                for line in sdp.splitlines():
                    if line.startswith("m="):
                        in_video = line.startswith("m=video")
                    elif in_video and line.startswith("a=control:") and control is None:
                        control = line[len("a=control:") :].strip()
                if control is None or control == "*":
                    track = base
                elif "://" in control:
                    track = control
                else:
                    track = base.rstrip("/") + "/" + control
                status, h, _ = await c.request("SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
                if status == 200:
                    c.session = h["session"][0].split(";")[0]
                    await c.request("PLAY", base, {"Range": "npt=0.000-"})
                    await c.pump(args.seconds / 2)
                    await c.request("GET_PARAMETER", base)
                    await c.pump(args.seconds / 2)
                    await c.request("TEARDOWN", base)
        except Exception as e:  # noqa: BLE001 - reported in the JSON line
            result["error"] = "%s: %s" % (type(e).__name__, e)
        await ws.close(1000)
        result.update(statuses=c.statuses, rtp=c.rtp, rtcp=c.rtcp, gaps=c.gaps, messages=c.messages)
    result["close_code"] = ws.close_code
    print(json.dumps(result), flush=True)
    return result.get("statuses", {}).get("PLAY") == 200 and result["rtp"] > 0


async def probe(args):
    """One framing rule; the result says what the server did."""
    m = re.match(r"wss?://([^/]+)(/.*)?$", args.url)
    rtsp_url = "rtsp://%s%s" % (m.group(1), m.group(2) or "/")
    options = ("OPTIONS %s RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: ws_rtsp_client.py\r\n\r\n" % rtsp_url).encode()
    result = {"probe": args.probe}
    protocols = {"no-subprotocol": None, "wrong-subprotocol": ["chat"]}.get(args.probe, [SUBPROTOCOL])
    try:
        ws = await websockets.connect(args.url, subprotocols=protocols, compression=None, max_size=1 << 22)
    except websockets.exceptions.InvalidStatusCode as e:
        result["status"] = e.status_code
        return result
    result["subprotocol"] = ws.subprotocol
    c = Client(ws, rtsp_url, None, None)
    try:
        if args.probe == "text":
            await ws.send(options.decode())
            await asyncio.wait_for(ws.wait_closed(), 5)
        elif args.probe == "oversized":
            await ws.send(b"\0" * (8 << 20))
            await asyncio.wait_for(ws.wait_closed(), 5)
        elif args.probe == "fragmented":
            await ws.send([options[:5], options[5:20], options[20:]])
            result["status"] = (await c.response(5))[0]
        elif args.probe == "ping":
            pong = await ws.ping(b"probe")
            await asyncio.wait_for(pong, 5)
            result["pong"] = True
            await ws.send(options)
            result["status"] = (await c.response(5))[0]
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        result["error"] = "%s: %s" % (type(e).__name__, e)
    await ws.close()
    result["close_code"] = ws.close_code
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--probe", choices=["no-subprotocol", "wrong-subprotocol", "text", "oversized", "fragmented", "ping"])
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(probe(args))), flush=True)
        return
    ok = asyncio.run(run(args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
