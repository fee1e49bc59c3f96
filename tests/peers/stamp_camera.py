#!/usr/bin/python3
"""An RTSP camera that writes each frame's capture time into the picture, for glass-to-glass delay.

Usage: stamp_camera.py [--port N]
gst-rtsp-server on 127.0.0.1 serving /cam1: live H.264 (x264enc as in gst_camera.py), 640x360 at
25 fps, made from raw frames this script paints. Each frame carries the wall-clock time it was
captured (time.time(), in ms, modulo 2^32) as black and white 16x16 blocks in its top 32 rows (see
stamp_band and read_stamp); a viewer that decodes the picture reads it back and subtracts it from
the time it shows the frame. The rest of the picture scrolls so the encoder has work to do.
Prints "READY port=<port>"; exits on SIGTERM or when its standard input closes.
Needs Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).
"""
import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 25
BLOCK = 16
BITS = WIDTH // BLOCK  # 40 blocks a row: 32 bits of time, 8 of check
BAND = 2 * BLOCK  # two rows carrying the same bits
WHITE, BLACK = 235, 16  # limited-range luma

PIPELINE = (
    "( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2 leaky-type=downstream "
    "caps=video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=1000 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )" % (WIDTH, HEIGHT, FPS)
)


def check_byte(ms):
    """8 check bits over the 32-bit time, so a misread block is caught rather than believed."""
    b = [(ms >> s) & 0xFF for s in (24, 16, 8, 0)]
    return (b[0] ^ b[1] ^ b[2] ^ b[3] ^ 0xA5) ^ ((sum(b) * 7) & 0xFF)


def stamp_bits(ms):
    """The 40 bits of one stamp row, most significant first: the time, then its check byte."""
    word = ((ms & 0xFFFFFFFF) << 8) | check_byte(ms & 0xFFFFFFFF)
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def stamp_band(ms):
    """The luma of the top BAND rows: each bit a BLOCK x BLOCK square, white for 1."""
    row = b"".join(bytes([WHITE if bit else BLACK]) * BLOCK for bit in stamp_bits(ms))
    return row * BAND


def read_stamp(luma_at):
    """The time a picture carries, or None when its blocks do not read back consistently.

    `luma_at(x, y)` gives a pixel's brightness (0-255) of the decoded picture. Both rows must read
    the same and the check byte must match."""
    rows = []
    for r in range(2):
        y = r * BLOCK + BLOCK // 2
        rows.append([1 if luma_at(i * BLOCK + BLOCK // 2, y) > 128 else 0 for i in range(BITS)])
    if rows[0] != rows[1]:
        return None
    word = 0
    for bit in rows[0]:
        word = (word << 1) | bit
    ms = word >> 8
    return ms if (word & 0xFF) == check_byte(ms) else None


def scenery():
    """A diagonal gradient twice the picture's height, scrolled a line per frame."""
    rows = HEIGHT - BAND
    return b"".join(bytes(((x + 2 * y) * 3 // 4) & 0xFF for x in range(WIDTH)) for y in range(2 * rows))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", default="0")
    args = ap.parse_args()

    Gst.init(None)
    back = scenery()
    rest = (HEIGHT - BAND) * WIDTH
    chroma = bytes([128]) * (WIDTH * HEIGHT // 2)

    def feed(appsrc, stop):
        # One frame every 1/FPS s; the stamp is taken when the frame is handed to the encoder.
        n, t0 = 0, time.monotonic()
        while not stop.is_set():
            wait = t0 + n / FPS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.5:  # the box stalled: carry on from now rather than burst
                n, t0 = 0, time.monotonic()
            ms = int(time.time() * 1000) & 0xFFFFFFFF
            off = (n % (HEIGHT - BAND)) * WIDTH
            frame = stamp_band(ms) + back[off : off + rest] + chroma
            appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(frame))
            n += 1

    def on_configure(_factory, media):
        appsrc = media.get_element().get_by_name_recurse_up("src")
        stop = threading.Event()
        media.connect("unprepared", lambda *_: stop.set())
        threading.Thread(target=feed, args=(appsrc, stop), daemon=True).start()

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    factory.connect("media-configure", on_configure)
    server.get_mount_points().add_factory("/cam1", factory)
    server.attach(None)

    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())

    def watch_stdin():
        sys.stdin.read()
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("READY port=%d" % server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    main()
