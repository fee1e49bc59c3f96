#!/usr/bin/python3
"""A real external authorization service for the relay's tests, and the tokens it vouches for.

  auth_service.py serve --port-file F --keys DIR [--users alice:pw,...]
      POST /auth     the relay's callback: 200 when user:password is listed, 403 otherwise.
      GET /jwks.json the public keys of DIR's *.pem private keys (kid = file name), read at
                     each request, so adding a key file rotates the set.
      POST /delay?ms=N  later callbacks (and key fetches) answer after N ms.
      GET /stats     JSON: callbacks and key fetches answered so far.
  auth_service.py keygen --keys DIR --kid K --alg RS256|ES256|EdDSA
  auth_service.py jwks --keys DIR     prints the public key set (for [auth.jwt] jwks_file)
  auth_service.py token --keys DIR --kid K --routes /a,/b* [--exp-in S] [--iss I] [--aud A] [--sub S]

Tokens are signed by PyJWT (python3-jwt) with keys from python3-cryptography. The server
stops by itself after --lifetime seconds (default 300).
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def keygen(keys, kid, alg):
    os.makedirs(keys, exist_ok=True)
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise SystemExit(f"unknown alg {alg}")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = os.path.join(keys, f".{kid}.tmp")
    with open(tmp, "wb") as f:
        f.write(pem)
    with open(os.path.join(keys, f"{kid}.alg"), "w") as f:
        f.write(alg)
    os.rename(tmp, os.path.join(keys, f"{kid}.pem"))


def load(keys, kid):
    with open(os.path.join(keys, f"{kid}.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(os.path.join(keys, f"{kid}.alg")) as f:
        alg = f.read().strip()
    return key, alg


def jwks(keys):
    out = []
    for name in sorted(os.listdir(keys)):
        if not name.endswith(".pem"):
            continue
        kid = name[:-4]
        key, alg = load(keys, kid)
        pub = key.public_key()
        if alg == "RS256":
            jwk = json.loads(RSAAlgorithm.to_jwk(pub))
        elif alg == "ES256":
            jwk = json.loads(ECAlgorithm.to_jwk(pub))
        else:
            jwk = json.loads(OKPAlgorithm.to_jwk(pub))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        out.append(jwk)
    return {"keys": out}


def token(args):
    key, alg = load(args.keys, args.kid)
    now = int(time.time())
    claims = {
        "sub": args.sub,
        "iat": now,
        "exp": now + args.exp_in,
        "relay_permissions": [{"action": "read", "routes": [r for r in args.routes.split(",") if r]}],
    }
    if args.grants:
        # Any grant list as JSON, e.g. the control API's [{"action": "api", "routes": ["/a/*"]}].
        claims["relay_permissions"] = json.loads(args.grants)
    if args.iss:
        claims["iss"] = args.iss
    if args.aud:
        claims["aud"] = args.aud
    print(jwt.encode(claims, key, algorithm=alg, headers={"kid": args.kid}))


def serve(args):
    users = dict(u.split(":", 1) for u in args.users.split(",") if ":" in u)
    state = {"delay_ms": 0, "callbacks": 0, "jwks": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, status, body=b"", ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def wait(self):
            with lock:
                d = state["delay_ms"]
            if d:
                time.sleep(d / 1000)

        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/jwks.json":
                self.wait()
                with lock:
                    state["jwks"] += 1
                self.reply(200, json.dumps(jwks(args.keys)).encode())
            elif url.path == "/stats":
                with lock:
                    self.reply(200, json.dumps(state).encode())
            else:
                self.reply(404)

        def do_POST(self):
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if url.path == "/delay":
                with lock:
                    state["delay_ms"] = int(parse_qs(url.query).get("ms", ["0"])[0])
                self.reply(200)
                return
            if url.path != "/auth":
                self.reply(404)
                return
            self.wait()
            with lock:
                state["callbacks"] += 1
            try:
                q = json.loads(body)
            except ValueError:
                self.reply(400)
                return
            secret_ok = self.headers.get("X-Relay-Secret") == "s3cret"
            ok = secret_ok and users.get(q.get("user")) == q.get("password") and q.get("action") == "read"
            self.reply(200 if ok else 403)

    # socketserver's default backlog (5) drops connections under a burst of callbacks.
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Timer(args.lifetime, server.shutdown).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port-file", required=True)
    s.add_argument("--keys", required=True)
    s.add_argument("--users", default="")
    s.add_argument("--lifetime", type=float, default=300)
    k = sub.add_parser("keygen")
    k.add_argument("--keys", required=True)
    k.add_argument("--kid", required=True)
    k.add_argument("--alg", default="RS256")
    j = sub.add_parser("jwks")
    j.add_argument("--keys", required=True)
    t = sub.add_parser("token")
    t.add_argument("--keys", required=True)
    t.add_argument("--kid", required=True)
    t.add_argument("--routes", default="")
    t.add_argument("--exp-in", type=int, default=600)
    t.add_argument("--iss", default="")
    t.add_argument("--aud", default="")
    t.add_argument("--sub", default="tester")
    t.add_argument("--grants", default="")
    a = p.parse_args()
    if a.cmd == "serve":
        os.makedirs(a.keys, exist_ok=True)
        serve(a)
    elif a.cmd == "keygen":
        keygen(a.keys, a.kid, a.alg)
    elif a.cmd == "jwks":
        print(json.dumps(jwks(a.keys)))
    else:
        token(a)


if __name__ == "__main__":
    sys.exit(main())
