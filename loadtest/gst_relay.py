#!/usr/bin/python3
"""A real RTSP relay for comparison: gst-rtsp-server re-serving each loadtest camera.

Usage: gst_relay.py --camera 127.0.0.1:8554 --streams N --port P
Mount /camI pulls rtsp://CAMERA/camI over TCP, depayloads the H.264 and payloads it again
(one shared pipeline per mount), as a typical gst-rtsp-server relay does.
Needs Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).
"""
import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--camera", required=True)
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--port", default="8555")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    mounts = server.get_mount_points()
    for i in range(args.streams):
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(
            "( rtspsrc location=rtsp://%s/cam%d protocols=tcp latency=0 "
            "! rtph264depay ! rtph264pay name=pay0 pt=96 mtu=1500 )" % (args.camera, i)
        )
        f.set_shared(True)
        mounts.add_factory("/cam%d" % i, f)
    server.attach(None)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    signal.signal(signal.SIGINT, lambda *_: loop.quit())
    print("READY port=%d" % server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    main()
