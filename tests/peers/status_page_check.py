#!/usr/bin/python3
"""Drives headless Chromium through the DevTools protocol (over --remote-debugging-pipe, so
only the standard library is needed) to check the relay's /status page.

Usage: status_page_check.py URL --token SECRET [--screenshot OUT.png] [--chromium /usr/bin/chromium]
Opens URL, notes whether the login form shows, types SECRET into it and submits, waits for the
cameras table, notes the uptime shown, waits for the page to refresh by itself, then reports the
page's text, its URL, its cookies and storage sizes. Prints one JSON line.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--remote-debugging-pipe"]


class Pipe:
    """DevTools over fds 3 (to Chromium) and 4 (from it): JSON messages ended by NUL."""

    def __init__(self, chromium, profile):
        # Chromium reads fd 3 and writes fd 4: the pipe ends are moved out of the way first,
        # then put on 3 and 4 for the child only.
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        high = [os.dup(fd) for fd in (to_r, to_w, from_r, from_w)]
        for fd in (to_r, to_w, from_r, from_w):
            os.close(fd)
        to_r, self.to_w, self.from_r, from_w = high
        os.dup2(to_r, 3, inheritable=True)
        os.dup2(from_w, 4, inheritable=True)
        self.proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (3, 4, to_r, from_w):
            os.close(fd)
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None, session=None, timeout=15):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        end = time.time() + timeout
        while time.time() < end:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self.from_r, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        raise RuntimeError(f"{method}: no answer")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--token", required=True)
    ap.add_argument("--screenshot")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    profile = tempfile.mkdtemp(prefix="rtr-status-")
    pipe = Pipe(args.chromium, profile)
    out = {}
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

        def js(expr):
            r = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
            return r.get("result", {}).get("value")

        pipe.call("Page.enable", {}, session)
        pipe.call("Page.navigate", {"url": args.url}, session)

        def wait_for(expr, secs):
            end = time.time() + secs
            while time.time() < end:
                v = js(expr)
                if v:
                    return v
                time.sleep(0.2)
            return None

        out["form_first"] = bool(wait_for(
            "!!document.getElementById('login') && !document.getElementById('login').hidden"
            " && document.getElementById('live').hidden", 10))
        js("document.getElementById('token').value = %s;"
           "document.getElementById('login').requestSubmit(); true" % json.dumps(args.token))
        uptime = "(document.getElementById('live').innerText.match(/up (\\d+) s/) || [])[1] || ''"
        out["uptime_first"] = wait_for("document.getElementById('cameras') ? " + uptime + " : ''", 10)
        first = out["uptime_first"]
        out["uptime_later"] = wait_for("(%s) !== %s ? %s : ''" % (uptime, json.dumps(first), uptime), 10)
        out["live"] = js("document.getElementById('live').innerText")
        out["href"] = js("location.href")
        out["cookie"] = js("document.cookie")
        out["local"] = js("localStorage.length")
        out["session"] = js("sessionStorage.length")
        if args.screenshot:
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    except Exception as e:  # reported, not raised: the test prints it
        out["error"] = str(e)
    finally:
        pipe.close()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(out))
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
