#!/usr/bin/env bash
# Builds the seed corpora (gitignored) from the fixtures: captured client heads and POST bodies,
# real camera answers, and interleaved streams built from them.
set -euo pipefail
cd "$(dirname "$0")"
fx=../fixtures
mkdir -p corpus/{http_head,base64_stream,rtsp_message,interleaved_demux,session,camera_requests,websocket,proxy_header,camera_session,shared_route,greeting}
i=0
# Client heads: each GET/POST block of HEADERS.txt.
awk '/^(GET|POST) /{n++} /^(GET|POST) /,/^$|^#####|^\(server/{ if ($0 !~ /^#####|^\(server/) print > ("corpus/http_head/head" n) }' "$fx/clients/HEADERS.txt"
for f in corpus/http_head/head*; do printf '\r\n' >> "$f"; sed -i 's/$/\r/' "$f"; done
for f in "$fx"/cameras/*.txt; do
  i=$((i + 1))
  cp "$f" "corpus/rtsp_message/cam$i"
  # A camera answer between two interleaved frames.
  { printf '$\x00\x00\x04abcd'; cat "$f"; printf '$\x01\x00\x02xy'; } > "corpus/interleaved_demux/cam$i"
  # Base64 of the answer, split tag byte first.
  { printf '\x07'; base64 -w0 "$f"; } > "corpus/base64_stream/cam$i"
  # Session script: viewer OPTIONS (tag 0), camera connected (4), camera answer (3).
  req="OPTIONS rtsp://relay/cam1 RTSP/1.0"$'\r\n'"CSeq: 1"$'\r\n\r\n'
  { printf '\x00'; printf "\\x$(printf %02x ${#req})"; printf '%s' "$req"; printf '\x04\x00\x03\xff'; head -c 255 "$f"; } > "corpus/session/cam$i"
done
# Viewer dialogues and attacks for camera_requests: a mode byte (odd = tunnel), then
# length-prefixed chunks of viewer bytes.
n=0
for req in \
  "OPTIONS rtsp://relay/cam1 RTSP/1.0"$'\r\n'"CSeq: 1"$'\r\n\r\n' \
  "DESCRIBE rtsp://relay/cam1?channel=10 RTSP/1.0"$'\r\n'"CSeq: 2"$'\r\n\r\n' \
  "SETUP rtsp://relay/cam1/t1?k=cam RTSP/1.0"$'\r\n'"CSeq: 3"$'\r\n'"Transport: RTP/AVP/TCP;interleaved=0-1"$'\r\n\r\n' \
  "DESCRIBE rtsp://relay/cam1/../s/201 RTSP/1.0"$'\r\n'"CSeq: 4"$'\r\n'"User-Agent: x"$'\r'"DESCRIBE rtsp://10.0.0.5/s/201 RTSP/1.0"$'\r\n\r\n' \
  "PLAY rtsp://relay/other/t2 RTSP/1.0"$'\r\n'"CSeq: 5"$'\r\n\r\n'; do
  for mode in 0 1; do
    n=$((n + 1))
    { printf "\\x0$mode"; printf "\\x$(printf %02x ${#req})"; printf '%s' "$req"; } > "corpus/camera_requests/req$n"
  done
done
# WebSocket: a split byte, then an upgrade head, or client frames (masked binary carrying an
# RTSP request, fragmented binary with a ping between, a text frame, a close).
crlf() { sed 's/$/\r/'; }
{ printf '\x03'; printf 'GET /cam1 HTTP/1.1\nHost: relay\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\nSec-WebSocket-Protocol: rtsp.onvif.org\n\n' | crlf; } > corpus/websocket/upgrade
{ printf '\x03'; printf 'GET /cam1 HTTP/1.1\nAccept: text/html\n\n' | crlf; } > corpus/websocket/page
printf '\x05\x82\x84\x00\x00\x00\x00$\x00\x00\x00' > corpus/websocket/binary
printf '\x09\x02\x82\x01\x02\x03\x04PQ\x89\x81\x00\x00\x00\x00p\x80\x82\x00\x00\x00\x00hi' > corpus/websocket/fragmented
printf '\x01\x81\x80\x00\x00\x00\x00' > corpus/websocket/text
printf '\x01\x88\x82\x00\x00\x00\x00\x03\xe8' > corpus/websocket/close
# PROXY headers as HAProxy sends them (v2 IPv4 and IPv6 with TLVs, LOCAL, v1), each after a
# limit byte (0x10: 4 KiB) and before a request.
pp=corpus/proxy_header
printf '\x10\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x09\x7f\x00\x00\x01\xcf\x1d\x46\xa0GET /cam1 HTTP/1.0\r\n' > "$pp/v2-ipv4"
{ printf '\x10\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x39'; head -c 32 /dev/zero; printf '\x9c\x40\x01\xbb'
  printf '\x01\x00\x08http/1.1\x04\x00\x07padding'; printf '\x16\x03\x01\x00\x05hello'; } > "$pp/v2-ipv6-tlvs"
printf '\x10\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00' > "$pp/v2-local"
printf '\x10PROXY TCP4 192.0.2.10 198.51.100.1 51000 80\r\nDESCRIBE rtsp://h/cam1 RTSP/1.0\r\n' > "$pp/v1-tcp4"
printf '\x10PROXY TCP6 2001:db8::7 ::1 40000 443\r\n' > "$pp/v1-tcp6"
printf '\x10PROXY UNKNOWN\r\n' > "$pp/v1-unknown"
# greeting: a flags byte (PROXY mode, web, room, home), a cut count, then first bytes as clients
# and balancers send them.
gr=corpus/greeting
printf '\x08\x00' > "$gr/get"; cat corpus/http_head/head1 >> "$gr/get"
printf '\x09\x02\x40\xc0PROXY TCP4 192.0.2.10 198.51.100.1 51000 80\r\nDESCRIBE rtsp://h/shared RTSP/1.0\r\nCSeq: 1\r\n\r\n' > "$gr/proxy-rtsp"
{ printf '\x0c\x01\x80'; cat corpus/websocket/upgrade | tail -c +2; } > "$gr/websocket"
printf '\x1a\x00POST /shared HTTP/1.0\r\nx-sessioncookie: abc\r\n\r\nREVTQ1JJQkU=' > "$gr/post"
echo "seeded: $(ls corpus/*/ | wc -l) files"
# camera_session: connect, answer OPTIONS, DESCRIBE (the target's own SDP), three SETUPs and PLAY,
# then H.264 parameter sets and an IDR, an H.265 IDR and audio; a timeout, a reconnect, again.
python3 - <<'PY'
import struct
def ev(tag, chunk=b""): return bytes([tag, len(chunk)]) + chunk
def rtp(seq, ts, payload, pt=96): return struct.pack(">BBHII", 0x80, 0x80 | pt, seq, ts, 0x1234) + payload
frames = [bytes([0]) + rtp(100, 9000, bytes([0x67, 0x42, 0, 0x1e])),
          bytes([0]) + rtp(101, 9000, bytes([0x68, 0xce, 0x3c, 0x80])),
          bytes([0]) + rtp(102, 9000, bytes([0x65]) + b"\x88" * 40),
          bytes([2]) + rtp(5, 9000, bytes([0x26, 0x01]) + b"\xaf" * 30, pt=97),
          bytes([4]) + rtp(7, 800, b"\xd5" * 40, pt=8)]
s = ev(3) + ev(1) * 7 + b"".join(ev(2, f) for f in frames)
s += ev(4) + ev(3) + ev(3) + ev(1) * 7 + ev(2, frames[2])
open("corpus/camera_session/dialogue", "wb").write(s)
PY
# shared_route: viewers setting up on the camera's channels and on others and playing, a
# keyframe and tiny packets, empty frames alone and in runs, a frame longer than it says, a
# reconnect, a viewer pausing and leaving (see src/proto/shared_route/harness.rs for the
# script's bytes).
printf '\x03\x00\x01\x00\x00\x01\x03\x00\x03\x03\x01\x01\x00\x06\x07\x03\x01\x03\x0a\x02\x01\x00\x00\x00\x02\x02\x02\x0a\x28' > corpus/shared_route/play-and-tiny
printf '\x03\x00\x01\x00\x00\x01\x03\x00\x03\x0a\x01\x01\x00\x02\xff\xff\x10abcdefghijklmnop\x08\x07\x40\x0a\x01\x04\x00\x04\x05\x00' > corpus/shared_route/oversized-reconnect-pause
