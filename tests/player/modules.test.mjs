// Unit tests of the player's modules under Node's test runner (`node --test tests/player/`), run
// by tests/browser_player.rs. The H.264 clip of assets/demo.h264 (and an H.265 one made with
// FFmpeg's libx265 when present) is packetised into RTP here, the player's depacketiser and muxer
// turn it back into fragmented MP4, and ffprobe (when present) must decode every frame of it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, webcrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';

import { H264Depacketizer, spsSize } from '../../assets/player/h264.js';
import { H265Depacketizer } from '../../assets/player/h265.js';
import { md5 } from '../../assets/player/md5.js';
import { initSegment, mediaSegment } from '../../assets/player/mp4.js';
import { MsePlayer } from '../../assets/player/mse.js';
import { RtspWsClient } from '../../assets/player/rtsp-ws.js';
import { parseSdp } from '../../assets/player/sdp.js';

globalThis.crypto ??= webcrypto;
const root = new URL('../../', import.meta.url).pathname;

// Annex B byte stream to NAL units.
function nals(bytes) {
  const out = [];
  let start = -1;
  for (let i = 0; i + 3 <= bytes.length; i++) {
    if (bytes[i] === 0 && bytes[i + 1] === 0 && bytes[i + 2] === 1) {
      if (start >= 0) out.push(trimZeros(bytes.subarray(start, i)));
      start = i + 3;
      i += 2;
    }
  }
  if (start >= 0) out.push(bytes.subarray(start));
  return out;
}
const trimZeros = (b) => { let e = b.length; while (e > 0 && b[e - 1] === 0) e--; return b.subarray(0, e); };

// NAL units to access units: a new one at a parameter set or AUD after a picture, or at a slice
// that starts a picture (first_mb_in_slice 0 / first_slice_segment_in_pic_flag).
function accessUnits(units, h265) {
  const aus = [];
  let cur = [];
  let hasPicture = false;
  for (const n of units) {
    const type = h265 ? (n[0] >> 1) & 0x3f : n[0] & 0x1f;
    const vcl = h265 ? type < 32 : type >= 1 && type <= 5;
    const firstSlice = vcl && (n[h265 ? 2 : 1] & 0x80) !== 0;
    const prefix = h265 ? type >= 32 && type <= 35 : type >= 6 && type <= 9;
    if (hasPicture && (prefix || firstSlice)) { aus.push(cur); cur = []; hasPicture = false; }
    cur.push(n);
    if (vcl) hasPicture = true;
  }
  if (cur.length) aus.push(cur);
  return aus;
}

// Access units to RTP packets: small NAL units aggregated (STAP-A / AP), large ones fragmented
// (FU-A / FU), the marker on each access unit's last packet, 3600 ticks (25 fps) apart.
function packetise(aus, h265, mtu = 600) {
  const packets = [];
  let seq = 65500; // wraps during the clip
  aus.forEach((au, k) => {
    const ts = (0xfffff000 + k * 3600) >>> 0; // wraps too
    const payloads = [];
    let group = [];
    const flush = () => {
      if (group.length === 1) payloads.push(group[0]);
      else if (group.length > 1) {
        const hdr = h265 ? [48 << 1, 1] : [(group[0][0] & 0x60) | 24];
        payloads.push(Uint8Array.from([...hdr, ...group.flatMap((n) => [n.length >> 8, n.length & 0xff, ...n])]));
      }
      group = [];
    };
    for (const n of au) {
      if (n.length + 3 > mtu) {
        flush();
        const hl = h265 ? 2 : 1;
        const type = h265 ? (n[0] >> 1) & 0x3f : n[0] & 0x1f;
        for (let off = hl; off < n.length; off += mtu) {
          const s = off === hl ? 0x80 : 0, e = off + mtu >= n.length ? 0x40 : 0;
          const hdr = h265 ? [(n[0] & 0x81) | (49 << 1), n[1], s | e | type] : [(n[0] & 0xe0) | 28, s | e | type];
          payloads.push(Uint8Array.from([...hdr, ...n.subarray(off, Math.min(n.length, off + mtu))]));
        }
      } else {
        if (group.reduce((x, g) => x + g.length + 2, 0) + n.length > mtu) flush();
        group.push(n);
      }
    }
    flush();
    payloads.forEach((p, i) => {
      const h = new Uint8Array(12);
      h[0] = 0x80;
      h[1] = (i === payloads.length - 1 ? 0x80 : 0) | 96;
      h[2] = (seq >> 8) & 0xff; h[3] = seq & 0xff;
      h.set([ts >>> 24, (ts >> 16) & 0xff, (ts >> 8) & 0xff, ts & 0xff], 4);
      seq = (seq + 1) & 0xffff;
      const pkt = new Uint8Array(12 + p.length);
      pkt.set(h); pkt.set(p, 12);
      packets.push(pkt);
    });
  });
  return packets;
}

function depacketise(d, packets) {
  const frames = [];
  for (const p of packets) frames.push(...d.push(p));
  return frames;
}

// Muxes frames as the player does and returns the fMP4 file.
function mux(d, frames) {
  const parts = [initSegment(d.config)];
  frames.forEach((f, i) => {
    const duration = i + 1 < frames.length ? frames[i + 1].timestamp - f.timestamp : 3600;
    parts.push(mediaSegment(i + 1, f.timestamp - frames[0].timestamp, [{ duration, keyframe: f.keyframe, nalus: f.nalus }]));
  });
  return Buffer.concat(parts.map((p) => Buffer.from(p)));
}

function ffprobeFrames(file) {
  const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_name,width,height,nb_read_frames', '-of', 'json', file]);
  if (r.error) return null;
  return JSON.parse(r.stdout.toString()).streams[0];
}

test('md5 matches node:crypto', () => {
  for (const s of ['', 'abc', 'x'.repeat(55), 'x'.repeat(56), 'x'.repeat(64), 'é'.repeat(1000)]) {
    assert.equal(md5(s), createHash('md5').update(s).digest('hex'));
  }
});

test('H.264 RTP (single, STAP-A, FU-A, wrapping sequence and timestamp) back to the clip\'s access units', () => {
  const units = nals(readFileSync(join(root, 'assets/demo.h264')));
  const aus = accessUnits(units, false);
  assert.equal(aus.length, 100);
  const packets = packetise(aus, false);
  const d = new H264Depacketizer();
  const frames = depacketise(d, packets);
  assert.equal(frames.length, 100);
  const strip = (au) => au.filter((n) => ![7, 8, 9].includes(n[0] & 0x1f));
  frames.forEach((f, i) => {
    assert.deepEqual(f.nalus.map((n) => Buffer.from(n)), strip(aus[i]).map((n) => Buffer.from(n)), `frame ${i}`);
    assert.equal(f.keyframe, i % 25 === 0);
    if (i) assert.equal(f.timestamp - frames[i - 1].timestamp, 3600);
  });
  const c = d.config;
  assert.equal(c.codec.slice(0, 7), 'avc1.42');
  assert.deepEqual([c.width, c.height], [640, 360]);
  assert.equal(d.configVersion, 2, 'SPS and PPS stored once: repeats are not changes');

  const dir = mkdtempSync(join(tmpdir(), 'player-'));
  writeFileSync(join(dir, 'h264.mp4'), mux(d, frames));
  const probe = ffprobeFrames(join(dir, 'h264.mp4'));
  if (probe) assert.deepEqual([probe.codec_name, probe.width, probe.height, Number(probe.nb_read_frames)], ['h264', 640, 360, 100]);
});

test('a lost FU-A fragment drops that NAL unit only', () => {
  const aus = accessUnits(nals(readFileSync(join(root, 'assets/demo.h264'))), false);
  const packets = packetise(aus, false, 300);
  // The second packet of the first keyframe's first fragmented slice.
  const lost = packets.findIndex((p) => (p[12] & 0x1f) === 28 && (p[13] & 0x80) === 0);
  const d = new H264Depacketizer();
  const frames = depacketise(d, packets.filter((_, i) => i !== lost));
  assert.equal(frames.length, 100);
  const total = (fs) => fs.reduce((n, f) => n + f.nalus.length, 0);
  assert.equal(total(frames), total(depacketise(new H264Depacketizer(), packets)) - 1);
});

test('SPS sizes with cropping and high profiles', () => {
  const sps = nals(readFileSync(join(root, 'assets/demo.h264'))).find((n) => (n[0] & 0x1f) === 7);
  assert.deepEqual(spsSize(sps), { width: 640, height: 360 });
  // x264 High profile 1920x1080 (cropped from 1088).
  const high = Buffer.from('6764002aacd940780227e5c05a808080a0000003002000000781e30632c0', 'hex');
  assert.deepEqual(spsSize(high), { width: 1920, height: 1080 });
});

test('H.265 parameter sets from sprop-* give hvcC and the codec string; FFmpeg decodes the muxed clip', () => {
  // x265's for 640x360 Main, level 2.1 (ffprobe: level=63).
  const hex = (h) => Buffer.from(h, 'hex').toString('base64');
  const sdpFmtp = {
    'sprop-vps': hex('40010c01ffff01600000030090000003000003003f959809'),
    'sprop-sps': hex('42010101600000030090000003000003003fa00502016965959a4932bc05a02000000300200000030321'),
    'sprop-pps': hex('4401c172b46240'),
  };
  const d = new H265Depacketizer(sdpFmtp);
  const c = d.config;
  assert.equal(c.codec, 'hvc1.1.6.L63.90');
  assert.deepEqual([c.width, c.height], [640, 360]);
  assert.equal(c.configBox[0], 'hvcC');
  assert.equal(c.configBox[1][22], 3, 'VPS, SPS and PPS arrays');

  const dir = mkdtempSync(join(tmpdir(), 'player-'));
  const src = join(dir, 'clip.h265');
  const made = spawnSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=25', '-t', '2', '-c:v', 'libx265',
    '-x265-params', 'log-level=none:keyint=25:bframes=0', '-f', 'hevc', src]);
  if (made.error || made.status !== 0) return; // no FFmpeg with libx265 here
  const aus = accessUnits(nals(readFileSync(src)), true);
  assert.equal(aus.length, 50);
  const d2 = new H265Depacketizer();
  const frames = depacketise(d2, packetise(aus, true));
  assert.equal(frames.length, 50);
  assert.equal(frames.filter((f) => f.keyframe).length, 2);
  writeFileSync(join(dir, 'h265.mp4'), mux(d2, frames));
  const probe = ffprobeFrames(join(dir, 'h265.mp4'));
  if (probe) assert.deepEqual([probe.codec_name, probe.width, probe.height, Number(probe.nb_read_frames)], ['hevc', 640, 360, 50]);
});

test('the RTSP client takes answers and $ frames from any cut of the stream', () => {
  const answer = 'RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nv=0\r\n';
  const stream = Buffer.concat([
    Buffer.from([0x24, 0, 0, 3, 1, 2, 3]),
    Buffer.from(answer),
    Buffer.from([0x24, 1, 0, 0]),
    Buffer.from([0x24, 0, 0, 2, 9, 9]),
  ]);
  for (let cut = 0; cut <= stream.length; cut++) {
    for (let cut2 = cut; cut2 <= stream.length; cut2 += 3) {
      const c = new RtspWsClient('ws://x/cam1', 'rtsp://x/cam1');
      const frames = [];
      let res = null;
      c.onInterleaved = (ch, b) => frames.push([ch, [...b]]);
      c.pending.set(1, { resolve: (r) => { res = r; }, reject: assert.fail });
      for (const part of [stream.subarray(0, cut), stream.subarray(cut, cut2), stream.subarray(cut2)]) c.receive(new Uint8Array(part));
      assert.deepEqual(frames, [[0, [1, 2, 3]], [1, []], [0, [9, 9]]], `cut at ${cut}, ${cut2}`);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'v=0\r\n');
    }
  }
});

test('Digest authorization as RFC 2617 computes it, with and without qop', () => {
  const c = new RtspWsClient('ws://x/cam1', 'rtsp://x/cam1');
  const h = (s) => createHash('md5').update(s).digest('hex');
  c.auth = { scheme: 'digest', realm: 'relay', nonce: 'abc', user: 'alice', password: 'pw', nc: 0 };
  const plain = c.authorization('DESCRIBE', 'rtsp://x/cam1');
  const want = h(`${h('alice:relay:pw')}:abc:${h('DESCRIBE:rtsp://x/cam1')}`);
  assert.match(plain, new RegExp(`^Digest username="alice", realm="relay", nonce="abc", uri="rtsp://x/cam1", response="${want}"$`));
  c.auth.qop = 'auth';
  const withQop = c.authorization('PLAY', 'rtsp://x/cam1');
  const cnonce = /cnonce="([0-9a-f]+)"/.exec(withQop)[1];
  const resp = h(`${h('alice:relay:pw')}:abc:00000001:${cnonce}:auth:${h('PLAY:rtsp://x/cam1')}`);
  assert.ok(withQop.includes(`qop=auth, nc=00000001, cnonce="${cnonce}", response="${resp}"`), withQop);
});

test('SDP controls resolve against the base', () => {
  const sdp = 'v=0\r\na=control:*\r\nm=audio 0 RTP/AVP 0\r\na=control:trackID=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9k,aM48gA==\r\na=control:trackID=1\r\n';
  const s = parseSdp(sdp, 'rtsp://relay/cam1/');
  assert.equal(s.url, 'rtsp://relay/cam1/');
  const v = s.media.find((m) => m.type === 'video');
  assert.equal(v.codec, 'H264');
  assert.equal(v.url, 'rtsp://relay/cam1/trackID=1');
  assert.equal(v.fmtp['sprop-parameter-sets'], 'Z0IAHpWoKA9k,aM48gA==');
  assert.equal(parseSdp(sdp.replace('trackID=1', 'rtsp://cam/x/1'), 'rtsp://relay/cam1').media[1].url, 'rtsp://cam/x/1');
});

test('the player catches up to a few frames from the live edge, not to a third of maxLatency', () => {
  // Only the <video> fields chase() reads and writes; the default maxLatency is 1 s.
  const video = { currentTime: 0, playbackRate: 1, paused: false, readyState: 4 };
  const player = new MsePlayer(video);
  const rateAt = (lag) => {
    video.currentTime = 10;
    player.chase(0, 10 + lag);
    return video.playbackRate;
  };
  // A joiner on a shared camera's cached group of pictures: well behind, much faster.
  assert.equal(rateAt(0.8), 1.25);
  // 0.2 s behind is still worth taking back (the page used to stay up to 0.33 s behind).
  assert.equal(rateAt(0.2), 1.1);
  assert.equal(rateAt(0.05), 1.0);
  assert.equal(player.jumps, 0);
  rateAt(1.5);
  assert.equal(player.jumps, 1);
  assert.equal(video.currentTime, 11.4); // 0.1 s before the newest frame
});
