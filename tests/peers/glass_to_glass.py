#!/usr/bin/python3
"""Glass-to-glass delay of the relay's player page against FFmpeg, watching one stamping camera.

Usage: glass_to_glass.py PAGE_URL RTSP_URL [--seconds S] [--warmup W] [--chromium PATH] [--samples OUT]
PAGE_URL is the relay's player page for a route whose camera is tests/peers/stamp_camera.py
(http://RELAY/cam1); RTSP_URL the same route for FFmpeg, tunnelled over HTTP (rtsp://RELAY/cam1).
Runs at the same time:
- headless Chromium on the page (DevTools protocol, as browser_player_check.py): a script added
  to the page reads each frame as it is presented (requestVideoFrameCallback, drawing the
  picture's top rows on a canvas) and notes its expectedDisplayTime on the wall clock;
- FFmpeg with the usual live flags (-fflags nobuffer -flags low_delay), and FFmpeg with its
  defaults, each decoding to raw grey pixels on a pipe, every frame noted the moment it is read.
Each picture carries its capture time (stamp_camera.py), so a frame's glass-to-glass delay is the
time it is shown (page) or decoded (FFmpeg: no display) minus the time it was captured, all on this
machine's one clock. After W s (3) to settle, frames shown during the next S s (20) count.
Prints a summary on stderr and one JSON line on stdout: per viewer the frames counted, stamps
that did not read back, and p50/p95/max delay in ms, and the page's p50/p95 minus FFmpeg's.
Exits 1 when a viewer counted no frame. Needs python3-websockets, chromium and ffmpeg.
"""
import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import websockets

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser_player_check import FLAGS, Cdp, page_socket_url  # noqa: E402
from stamp_camera import BAND, BITS, BLOCK, WIDTH, read_stamp  # noqa: E402

FFMPEG_LIVE = ["-fflags", "nobuffer", "-flags", "low_delay"]

# Added to the page once it plays: for each presented frame, the stamp blocks' centres (one
# character per block, "1" for white) and the wall-clock times it is expected on screen and was
# handed to the compositor. Date.now() - performance.now() maps the page's clock to the wall
# clock at each frame, so no drift between the two accumulates.
PAGE_READER = """(() => {
  const v = document.getElementById('video');
  const canvas = document.createElement('canvas');
  canvas.width = %(width)d; canvas.height = %(band)d;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const out = (window.glassToGlass = []);
  const onFrame = (_now, meta) => {
    ctx.drawImage(v, 0, 0, %(width)d, %(band)d, 0, 0, %(width)d, %(band)d);
    const px = ctx.getImageData(0, 0, %(width)d, %(band)d).data;
    let bits = '';
    for (let y = %(half)d; y < %(band)d; y += %(block)d)
      for (let x = %(half)d; x < %(width)d; x += %(block)d) bits += px[(y * %(width)d + x) * 4 + 1] > 128 ? '1' : '0';
    const wall = Date.now() - performance.now();
    out.push([bits, wall + meta.expectedDisplayTime, wall + meta.presentationTime]);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  return true;
})()""" % {"width": WIDTH, "band": BAND, "block": BLOCK, "half": BLOCK // 2}


def delay_ms(shown_ms, stamp):
    """Shown (wall-clock ms) minus the captured stamp (wall-clock ms modulo 2^32)."""
    return ((int(shown_ms) - stamp) & 0xFFFFFFFF) + (shown_ms - int(shown_ms))


class Viewer:
    def __init__(self, name):
        self.name = name
        self.samples = []  # (shown wall-clock ms, delay ms)
        self.unreadable = 0

    def add(self, shown_ms, stamp):
        if stamp is None:
            self.unreadable += 1
        else:
            self.samples.append((shown_ms, delay_ms(shown_ms, stamp)))

    def summary(self, start_ms, end_ms):
        d = sorted(x for t, x in self.samples if start_ms <= t < end_ms)
        pick = lambda q: round(d[min(len(d) - 1, int(q * len(d)))], 1) if d else None  # noqa: E731
        return {"frames": len(d), "unreadable": self.unreadable, "p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)}


def ffmpeg_viewer(viewer, url, flags, stop, errors):
    """FFmpeg decoding `url` (RTSP tunnelled over HTTP) to the picture's stamp rows in grey.

    Every decoded frame once (-fps_mode passthrough: rawvideo would otherwise get constant-rate
    output, frames dropped or repeated; -enc_time_base -1 keeps the camera's 90 kHz timestamps, so
    no two frames round to one), each written to the pipe as soon as it is out."""
    size = WIDTH * BAND
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *flags, "-rtsp_transport", "http", "-i", url,
         "-an", "-vf", "crop=%d:%d:0:0" % (WIDTH, BAND), "-pix_fmt", "gray", "-fps_mode", "passthrough",
         "-enc_time_base", "-1", "-f", "rawvideo", "-flush_packets", "1", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
    )
    viewer.proc = proc
    try:
        while not stop.is_set():
            buf = proc.stdout.read(size)
            shown = time.time() * 1000
            if len(buf) < size:
                break
            viewer.add(shown, read_stamp(lambda x, y: buf[y * WIDTH + x]))
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not viewer.samples:  # its complaints matter only when it showed nothing
            log.seek(0)
            errors.append("%s: %s" % (viewer.name, log.read().decode(errors="replace")[-2000:]))


def page_stamp(bits):
    return read_stamp(lambda x, y: 255 if bits[(y // BLOCK) * BITS + x // BLOCK] == "1" else 0)


async def page_viewer(args, port_file, viewer, presented, ready):
    async with websockets.connect(await page_socket_url(port_file), max_size=1 << 26, compression=None) as ws:
        cdp = Cdp(ws)
        await cdp.call("Page.enable")
        await cdp.call("Page.navigate", url=args.page)
        t0 = time.monotonic()
        while not await cdp.js("(window.player || {}).frames > 0"):
            if time.monotonic() - t0 > 25:
                raise RuntimeError("the page played nothing: %s" % await cdp.js("JSON.stringify(window.player)"))
            await asyncio.sleep(0.1)
        await cdp.js(PAGE_READER)
        ready.set()
        # Collected every second so the page's array stays small.
        while not viewer.done.is_set():
            await asyncio.sleep(1)
            for bits, display, presentation in await cdp.js("window.glassToGlass.splice(0)"):
                stamp = page_stamp(bits)
                viewer.add(display, stamp)
                if stamp is not None:
                    presented.add(presentation, stamp)
        viewer.player = await cdp.js("window.player")


def run_page(args, viewer, presented, ready, errors):
    profile = tempfile.mkdtemp(prefix="glass-to-glass-")
    browser = subprocess.Popen(
        [args.chromium, *FLAGS, "--user-data-dir=" + profile, "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(page_viewer(args, os.path.join(profile, "DevToolsActivePort"), viewer, presented, ready))
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        errors.append("page: %s: %s" % (type(e).__name__, e))
        ready.set()
    finally:
        browser.terminate()
        try:
            browser.wait(5)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("page")
    ap.add_argument("rtsp")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--samples", help="also write every frame's (shown wall-clock ms, delay ms) here, as JSON")
    args = ap.parse_args()

    page, presented = Viewer("page"), Viewer("page (presentationTime)")
    ffmpeg, ffmpeg_default = Viewer("ffmpeg"), Viewer("ffmpeg (defaults)")
    stop, ready, errors = threading.Event(), threading.Event(), []
    page.done = stop
    threads = [
        threading.Thread(target=run_page, args=(args, page, presented, ready, errors)),
        threading.Thread(target=ffmpeg_viewer, args=(ffmpeg, args.rtsp, FFMPEG_LIVE, stop, errors)),
        threading.Thread(target=ffmpeg_viewer, args=(ffmpeg_default, args.rtsp, [], stop, errors)),
    ]
    for t in threads:
        t.start()
    ready.wait(40)
    time.sleep(args.warmup)
    start = time.time() * 1000
    time.sleep(args.seconds)
    end = time.time() * 1000
    stop.set()
    for v in (ffmpeg, ffmpeg_default):
        if getattr(v, "proc", None):
            v.proc.terminate()
    for t in threads:
        t.join(30)

    viewers = {v.name: v.summary(start, end) for v in (page, presented, ffmpeg, ffmpeg_default)}
    result = {"seconds": args.seconds, "viewers": viewers, "errors": errors}
    p, f = viewers["page"], viewers["ffmpeg"]
    if p["frames"] and f["frames"]:
        result["page_minus_ffmpeg"] = {"p50": round(p["p50"] - f["p50"], 1), "p95": round(p["p95"] - f["p95"], 1)}
    result["player"] = getattr(page, "player", None)
    if args.samples:
        with open(args.samples, "w") as f:
            json.dump({v.name: v.samples for v in (page, presented, ffmpeg, ffmpeg_default)}, f)
    for name, s in viewers.items():
        print("%-24s %4d frames (%d unreadable)  p50 %6s ms  p95 %6s ms  max %6s ms"
              % (name, s["frames"], s["unreadable"], s["p50"], s["p95"], s["max"]), file=sys.stderr)
    if "page_minus_ffmpeg" in result:
        d = result["page_minus_ffmpeg"]
        print("%-24s p50 %+.1f ms, p95 %+.1f ms" % ("page - ffmpeg", d["p50"], d["p95"]), file=sys.stderr)
    for e in errors:
        print(e, file=sys.stderr)
    print(json.dumps(result), flush=True)
    sys.exit(0 if all(s["frames"] for s in viewers.values()) else 1)


if __name__ == "__main__":
    main()
