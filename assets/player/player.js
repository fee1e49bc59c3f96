// The relay's built-in player: opens the page's own path as RTSP over WebSocket, sets up the
// video track, depacketises H.264 (or H.265 where MSE plays it), muxes each frame into
// fragmented MP4 and plays it through Media Source Extensions.
//
// Pipeline: RtspWsClient (`$` frames) → H264/H265Depacketizer (access units) → one frame held
// back to learn its duration → mediaSegment → MsePlayer (low-latency feeding). Reconnects after
// a lost connection. `window.player` exposes counters for tests and the curious, among them
// `delayMs`: the delay the page adds, from the arrival of a frame's last packet to its display
// (requestVideoFrameCallback), averaged over the last 50 frames.

import { H264Depacketizer } from './h264.js';
import { H265Depacketizer } from './h265.js';
import { initSegment, mediaSegment } from './mp4.js';
import { MsePlayer } from './mse.js';
import { RtspWsClient } from './rtsp-ws.js';
import { parseSdp } from './sdp.js';

const params = new URLSearchParams(location.search);
const video = document.getElementById('video');
const statusLine = document.getElementById('status');
const stats = (window.player = { state: 'starting', codec: null, width: 0, height: 0, packets: 0, frames: 0, keyframes: 0, bytes: 0, jumps: 0, latency: 0, delayMs: null, error: null, connects: 0 });

function status(state, detail = '') {
  stats.state = state;
  statusLine.textContent = detail ? `${state}: ${detail}` : state;
}

// The route is the page's own path; the player's query (maxLatency) is not passed on, except
// a `jwt` token: kept in memory for the WebSocket URL only, and taken out of the address bar
// and history at once so it is not bookmarked, shared or left in the browser's history.
const path = location.pathname;
const token = params.get('jwt');
if (token !== null) {
  params.delete('jwt');
  const rest = params.toString();
  history.replaceState(null, '', path + (rest ? `?${rest}` : '') + location.hash);
}
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}` +
  (token ? `?jwt=${encodeURIComponent(token)}` : '');
const rtspUrl = `rtsp://${location.host}${path}`;
document.title = `${decodeURIComponent(path)} · rtsp-tunnel-relay`;
document.getElementById('route').textContent = decodeURIComponent(path);

// Name and password from the form, when the relay answers 401.
function askCredentials(realm, retry) {
  const form = document.getElementById('login');
  form.hidden = false;
  document.getElementById('realm').textContent = realm + (retry ? ' (try again)' : '');
  status('waiting for a name and password');
  return new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      form.hidden = true;
      resolve({ user: form.elements.user.value, password: form.elements.password.value });
    };
    form.onreset = () => { form.hidden = true; resolve(null); };
  });
}

let client = null;

async function run() {
  stats.connects++;
  status('connecting');
  client = new RtspWsClient(wsUrl, rtspUrl, { askCredentials });
  const closed = new Promise((resolve) => { client.onClose = resolve; });
  await client.open();
  const { sdp, base } = await client.describe();
  const session = parseSdp(sdp, base);
  const h265ok = MsePlayer.supports('hvc1.1.6.L93.B0');
  const media =
    session.media.find((m) => m.type === 'video' && m.codec === 'H264') ||
    session.media.find((m) => m.type === 'video' && m.codec === 'H265' && h265ok);
  if (!media) {
    const codecs = session.media.map((m) => `${m.type} ${m.codec}`).join(', ');
    throw Object.assign(new Error(`nothing this browser can play (${codecs || 'no media'})`), { fatal: true });
  }
  const depacketizer = media.codec === 'H264' ? new H264Depacketizer(media.fmtp) : new H265Depacketizer(media.fmtp);
  const mse = new MsePlayer(video, { maxLatency: Number(params.get('maxLatency')) || 1.0 });
  mse.onError = (e) => client.finish(e);

  let held = null; // the newest frame, waiting for the next one to learn its duration
  let lastDuration = 3600;
  let base0 = null;
  let sequence = 0;
  let configVersion = -1;
  let started = false;
  const arrivals = new Map(); // media time (ms) → performance.now() when the frame was complete
  const delays = [];
  if (video.requestVideoFrameCallback) {
    const onFrame = (_now, meta) => {
      const arrived = arrivals.get(Math.round(meta.mediaTime * 1000));
      if (arrived !== undefined) {
        delays.push(meta.expectedDisplayTime - arrived);
        if (delays.length > 50) delays.shift();
        stats.delayMs = delays.reduce((a, b) => a + b, 0) / delays.length;
      }
      if (!client.closed) video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  const emit = (frame, duration) => {
    if (frame.configVersion !== configVersion) {
      const config = depacketizer.config;
      if (!config) return;
      if (!started) {
        if (!MsePlayer.supports(config.codec)) {
          client.finish(Object.assign(new Error(`this browser cannot play ${config.codec}`), { fatal: true }));
          return;
        }
        mse.start(config.codec).catch((e) => client.finish(e));
        started = true;
        Object.assign(stats, { codec: config.codec, width: config.width, height: config.height });
        status('playing', `${config.codec} ${config.width}×${config.height}`);
      }
      // A changed SPS/PPS (or the first): a new initialization segment before the frame.
      mse.append(initSegment(config, media.clockRate));
      configVersion = frame.configVersion;
    }
    if (base0 === null) base0 = frame.timestamp;
    mse.append(mediaSegment(++sequence, frame.timestamp - base0, [{ duration, keyframe: frame.keyframe, nalus: frame.nalus }]));
    arrivals.set(Math.round(((frame.timestamp - base0) / media.clockRate) * 1000), frame.arrived);
    if (arrivals.size > 500) arrivals.delete(arrivals.keys().next().value);
    stats.frames++;
    if (frame.keyframe) stats.keyframes++;
    stats.jumps = mse.jumps;
    stats.latency = mse.latency;
  };

  client.onInterleaved = (channel, packet) => {
    if (channel !== 0) return; // RTCP on 1
    stats.packets++;
    stats.bytes += packet.length;
    for (const frame of depacketizer.push(packet)) {
      if (held === null && !frame.keyframe) continue; // start on a keyframe
      frame.configVersion = depacketizer.configVersion;
      frame.arrived = performance.now();
      if (held) {
        let duration = frame.timestamp - held.timestamp;
        // A jump (camera restart, lost frames over seconds) keeps the usual duration instead.
        if (duration <= 0 || duration > 5 * media.clockRate) duration = lastDuration;
        lastDuration = duration;
        emit(held, duration);
      }
      held = frame;
    }
  };

  await client.setup(media.url, 0);
  await client.play(session.url);
  status('waiting for the first frame');
  const error = await closed;
  throw error || new Error('connection closed');
}

async function main() {
  for (let attempt = 0; ; attempt++) {
    const framesBefore = stats.frames;
    try {
      await run();
    } catch (e) {
      stats.error = e.message;
      const fatal = e.fatal || e.status === 401 || e.status === 403 || e.status === 404;
      status('stopped', e.message);
      if (fatal) return;
    }
    if (stats.frames > framesBefore) attempt = 0; // it played: start the backoff over
    // Reconnect: 1 s, 2 s, 4 s, … at most 30 s apart.
    await new Promise((r) => setTimeout(r, Math.min(30, 2 ** Math.min(attempt, 5)) * 1000));
  }
}

addEventListener('pagehide', () => { if (client) client.close(); });
main();
