#!/usr/bin/python3
"""Drives headless Chromium through the DevTools protocol to check the relay's player page.

Usage: browser_player_check.py URL --screenshot OUT.png [--seconds S] [--user U --password P]
       [--chromium /usr/bin/chromium] [--insecure]
Starts Chromium headless with a fresh profile, opens URL, fills the page's login form with U/P if
the page asks, waits (at most 25 s) for the first decoded frame, then samples the <video> for S
seconds (10 by default): getVideoPlaybackQuality().totalVideoFrames and currentTime at the start
and the end; then blocks the page's thread for 2.5 s and reports whether the player jumped back to
the live edge ("catch_up": jumps, latency after). Saves a screenshot of the video element and measures its pixel variance (a blank or
frozen-black picture has none). Prints one JSON line with the samples, the time from navigation
to the first decoded frame, the player's own counters (window.player) and the console errors;
exits 0 when the counts rose, time advanced and the picture is not blank.
--insecure accepts any certificate (a test's self-signed one on 127.0.0.1).
Needs python3-websockets for the DevTools WebSocket, and chromium.
"""
import argparse
import asyncio
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

import websockets

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1000,800",
    "--remote-debugging-port=0",
]


class Cdp:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    async def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("JS error: %s" % r["exceptionDetails"])
        return r["result"].get("value")


SAMPLE = """(() => { const v = document.getElementById('video');
  const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
  return { frames: q.totalVideoFrames || 0, dropped: q.droppedVideoFrames || 0, time: v ? v.currentTime : 0,
           player: window.player || null, login: !!document.getElementById('login') && !document.getElementById('login').hidden }; })()"""


def png_variance(png):
    """Variance of the luma of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + n
    assert depth == 8 and color in (2, 6), "unexpected PNG format"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    total = total2 = count = 0
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        for x in range(0, stride, bpp * 4):  # every 4th pixel is plenty
            lum = (299 * line[x] + 587 * line[x + 1] + 114 * line[x + 2]) // 1000
            total += lum
            total2 += lum * lum
            count += 1
    mean = total / count
    return total2 / count - mean * mean


async def page_socket_url(port_file):
    """The DevTools WebSocket URL of Chromium's page, once it has written its DevTools port."""
    deadline = time.monotonic() + 10
    while not os.path.exists(port_file) or len(open(port_file).read().split("\n")) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("chromium did not open its DevTools port")
        await asyncio.sleep(0.1)
    port = int(open(port_file).read().split("\n")[0])
    targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5))
    return next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]


async def check(args, port_file, errors):
    async with websockets.connect(await page_socket_url(port_file), max_size=1 << 26, compression=None) as ws:
        cdp = Cdp(ws)
        await cdp.call("Runtime.enable")
        await cdp.call("Page.enable")
        t0 = time.monotonic()
        await cdp.call("Page.navigate", url=args.url)
        first = None
        filled = False
        while time.monotonic() - t0 < 25:
            s = await cdp.js(SAMPLE)
            if s["login"] and not filled and args.user is not None:
                await cdp.js(
                    "(() => { const f = document.getElementById('login'); f.elements.user.value = %s;"
                    " f.elements.password.value = %s; f.requestSubmit(); })()" % (json.dumps(args.user), json.dumps(args.password))
                )
                filled = True
            if s["frames"] > 0 and s["time"] > 0:
                first = time.monotonic() - t0
                break
            await asyncio.sleep(0.05)
        start = await cdp.js(SAMPLE)
        await asyncio.sleep(args.seconds)
        end = await cdp.js(SAMPLE)
        # Catching up: the page's thread blocked for 2.5 s (a busy tab) receives a backlog of
        # frames at once and must jump to the live edge rather than play 2.5 s late.
        await cdp.js("(() => { const t = Date.now(); while (Date.now() - t < 2500) {} })()")
        await asyncio.sleep(2)
        after = await cdp.js(SAMPLE)
        catch_up = {"jumps": after["player"]["jumps"] - end["player"]["jumps"], "latency": after["player"]["latency"]}
        rect = await cdp.js("(() => { const r = document.getElementById('video').getBoundingClientRect();"
                            " return { x: r.x, y: r.y, width: r.width, height: r.height }; })()")
        clip = dict(rect, scale=1)
        shot = await cdp.call("Page.captureScreenshot", format="png", clip=clip) if rect["width"] > 0 else {"data": ""}
        png = base64.b64decode(shot["data"])
        with open(args.screenshot, "wb") as f:
            f.write(png)
        variance = png_variance(png) if png else 0.0
        for e in cdp.events:
            if e["method"] == "Runtime.exceptionThrown":
                errors.append(e["params"]["exceptionDetails"].get("exception", {}).get("description", "exception"))
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"]))
        return {
            "first_frame_secs": first,
            "start": start,
            "end": end,
            "catch_up": catch_up,
            "variance": variance,
            "login_filled": filled,
            "secure_context": await cdp.js("window.isSecureContext"),
            # What the address bar and history hold at the end (a ?jwt= token must be gone).
            "location": await cdp.js("location.href"),
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--insecure", action="store_true")
    args = ap.parse_args()
    profile = tempfile.mkdtemp(prefix="player-check-")
    browser = subprocess.Popen(
        [args.chromium, *FLAGS, *(["--ignore-certificate-errors"] if args.insecure else []), "--user-data-dir=" + profile, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    errors = []
    try:
        result = asyncio.run(check(args, os.path.join(profile, "DevToolsActivePort"), errors))
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        result = {"error": "%s: %s" % (type(e).__name__, e)}
    finally:
        browser.terminate()
        try:
            browser.wait(5)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
    result["console_errors"] = errors[:20]
    ok = (
        "error" not in result
        and result["end"]["frames"] > result["start"]["frames"]
        and result["end"]["time"] > result["start"]["time"]
        and result["variance"] > 10
    )
    result["ok"] = ok
    print(json.dumps(result), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
