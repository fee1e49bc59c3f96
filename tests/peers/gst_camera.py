#!/usr/bin/python3
"""A real RTSP camera for the tests: gst-rtsp-server on 127.0.0.1 serving live H.264.

Usage: gst_camera.py [--port N] [--mounts N] [--user U --password P]... [--pt N] [--tls CERT KEY]
Prints "READY port=<port>" once listening; serves /cam1 .. /camN, each from one encoder shared
by all its sessions; then prints a line per event, flushed at once:
  "CLIENT" for each RTSP connection accepted, "CLIENT_CLOSED" when one ends;
  "REQUEST <METHOD> <path>[?<query>]" for every request it handles;
  "SESSION <path> <id>" for each RTSP session a SETUP created, "SESSION_END <id>" when the
  session pool drops one (TEARDOWN, timeout or its connection closing);
  "TEARDOWN <path> <user-agent>" for each session a TEARDOWN freed.
--tls CERT KEY: RTSPS (and RTSP over HTTPS tunnels) with this PEM certificate chain and key.
A fixed --port can be reused at once after a previous camera on it was killed, so a test can
restart "the same camera". Exits on SIGTERM or when its standard input closes (so a dying test
never leaks it).
Needs Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).
"""
import argparse
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=1000 "
    "! rtph264pay name=pay0 pt=%d config-interval=1 )"
)


def say(line):
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", default="0")
    ap.add_argument("--mounts", type=int, default=2)
    # Repeated: every pair is a user the camera accepts (a route can move from one to another).
    ap.add_argument("--user", action="append", default=[])
    ap.add_argument("--password", action="append", default=[])
    # Another RTP payload type makes another stream description (a camera reconfigured).
    ap.add_argument("--pt", type=int, default=96)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE % args.pt)
    factory.set_shared(True)
    if args.user or args.tls:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        for user, password in zip(args.user, args.password):
            auth.add_digest(user, password, token)
        if args.user:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            # No users: everyone gets the role (RTSPAuth is here only for the certificate).
            auth.set_default_token(token)
        if args.tls:
            from gi.repository import Gio  # noqa: E402

            auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(args.tls[0], args.tls[1]))
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    mounts = server.get_mount_points()
    for i in range(1, args.mounts + 1):
        mounts.add_factory("/cam%d" % i, factory)
    server.attach(None)

    def log_requests(_server, client):
        def logger(method):
            def log(_client, ctx):
                uri = ctx.uri
                target = "*" if uri is None else uri.abspath + ("?" + uri.query if uri.query else "")
                say("REQUEST %s %s" % (method, target))

            return log

        for method in ("options", "describe", "setup", "play", "pause", "teardown", "get-parameter"):
            client.connect("%s-request" % method, logger(method.upper().replace("-", "_")))

    def on_teardown(_client, ctx):
        # Emitted once the TEARDOWN was accepted and its session released.
        res, agent = ctx.request.get_header(GstRtsp.RTSPHeaderField.USER_AGENT, 0)
        say("TEARDOWN %s %s" % (ctx.uri.abspath, agent if res == GstRtsp.RTSPResult.OK else "-"))

    # Sessions a SETUP created and not yet reported: "new-session" comes before the SETUP is
    # answered, when the session has no media (hence no path) yet; "setup-request" comes after.
    fresh = set()

    def on_new_session(_client, session):
        fresh.add(session.get_sessionid())

    def on_setup(_client, ctx):
        sid = ctx.session.get_sessionid() if ctx.session is not None else None
        if sid in fresh:
            fresh.discard(sid)
            say("SESSION %s %s" % (ctx.uri.abspath, sid))

    def on_client(server, client):
        say("CLIENT")
        log_requests(server, client)
        client.connect("teardown-request", on_teardown)
        client.connect("new-session", on_new_session)
        client.connect("setup-request", on_setup)
        client.connect("closed", lambda _c: say("CLIENT_CLOSED"))

    server.connect("client-connected", on_client)
    server.get_session_pool().connect("session-removed", lambda _p, s: say("SESSION_END %s" % s.get_sessionid()))

    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())

    def watch_stdin():
        sys.stdin.read()
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    say("READY port=%d" % server.get_bound_port())
    loop.run()


if __name__ == "__main__":
    main()
