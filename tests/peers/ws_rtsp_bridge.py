#!/usr/bin/python3
"""A test double for the relay's browser side: RTSP over WebSocket (subprotocol rtsp.onvif.org)
bridged to an RTSP camera over TCP, plus the player's files.

Usage: ws_rtsp_bridge.py --camera-port N [--port N] [--assets DIR] [--tls-cert PEM --tls-key PEM]
Serves on 127.0.0.1: GET /_player/<file> the player's modules, GET / the route list (one route,
/cam1), any other GET the player page; a WebSocket upgrade offering rtsp.onvif.org opens a TCP
connection to the camera and copies bytes both ways (the camera's reads go out as binary
messages whatever their boundaries, which the player must cope with). A missing subprotocol gets
400, a text frame closes with 1003. With --tls-cert/--tls-key it speaks HTTPS and wss://. Prints "READY port=<port>", then "WS <path>" per WebSocket
and "WS-CLOSED <path> <code>" when one ends; exits when its standard input closes.
Needs python3-websockets (Debian) or websockets from PyPI, 10.x legacy server API.
"""
import argparse
import asyncio
import http
import os
import ssl
import sys

import websockets
import websockets.server

SUBPROTOCOL = "rtsp.onvif.org"
# The relay's Content-Security-Policy for its pages (src/web_assets.rs), so the browser test
# catches a page that needs more.
CSP = ("default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:; "
       "style-src 'self'; base-uri 'none'; form-action 'none'")
TYPES = {".js": "text/javascript", ".html": "text/html; charset=utf-8", ".css": "text/css"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--camera-port", type=int, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--assets", default=os.path.join(os.path.dirname(__file__), "../../assets/player"))
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    asyncio.run(serve(args))


async def serve(args):
    def page(name):
        with open(os.path.join(args.assets, name), "rb") as f:
            return f.read()

    async def process_request(path, headers):
        if "websocket" in headers.get("Upgrade", "").lower():
            offered = [p.strip() for v in headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",")]
            if SUBPROTOCOL not in offered:
                return http.HTTPStatus.BAD_REQUEST, [("Sec-WebSocket-Protocol", SUBPROTOCOL)], b"rtsp.onvif.org only\n"
            return None  # the WebSocket handshake goes on
        path = path.split("?")[0]
        if path.startswith("/_player/"):
            name = os.path.basename(path)
            ext = os.path.splitext(name)[1]
            if name and ext in TYPES and os.path.exists(os.path.join(args.assets, name)):
                return http.HTTPStatus.OK, [("Content-Type", TYPES[ext]), ("Cache-Control", "no-cache")], page(name)
            return http.HTTPStatus.NOT_FOUND, [], b"not found\n"
        if path == "/":
            body = page("routes.html").replace(b"<!--ROUTES-->", b'<li><a href="/cam1">/cam1</a></li>')
            return http.HTTPStatus.OK, [("Content-Type", TYPES[".html"]), ("Content-Security-Policy", CSP)], body
        headers = [("Content-Type", TYPES[".html"]), ("Cache-Control", "no-cache"), ("Content-Security-Policy", CSP)]
        return http.HTTPStatus.OK, headers, page("index.html")

    async def bridge(ws, path):
        print("WS %s" % path, flush=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", args.camera_port)

        async def up():
            async for msg in ws:
                if isinstance(msg, str):
                    await ws.close(1003, "binary frames only")
                    return
                writer.write(msg)
                await writer.drain()

        async def down():
            while True:
                data = await reader.read(65536)
                if not data:
                    await ws.close(1000, "camera closed")
                    return
                await ws.send(data)

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            writer.close()
            print("WS-CLOSED %s %s" % (path, ws.close_code), flush=True)

    stop = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or (sys.stdin.buffer.read1(4096) or stop.set_result(None)))
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    async with websockets.server.serve(
        bridge,
        "127.0.0.1",
        args.port,
        subprotocols=[SUBPROTOCOL],
        process_request=process_request,
        compression=None,  # the relay negotiates no extension either
        max_size=1 << 20,
        ssl=tls,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print("READY port=%d" % port, flush=True)
        await stop


if __name__ == "__main__":
    main()
