// An RTSP client over WebSocket as ONVIF defines it: subprotocol `rtsp.onvif.org`, RTSP messages
// and `$` interleaved frames (RFC 2326 §10.12) in binary frames, the frames' payloads being one
// byte stream (a message may span frames, a frame may hold several).
//
// RtspWsClient sends requests (CSeq, Session, Digest or Basic authorization after a 401), matches
// answers, keeps the session alive (GET_PARAMETER, or OPTIONS when the server does not list it,
// at half the session timeout), hands `$` frames to `onInterleaved(channel, bytes)`, and tears
// the session down on close.

import { md5 } from './md5.js';

const CRLF = '\r\n';
const utf8 = new TextDecoder();

export class RtspError extends Error {
  constructor(status, reason, response) {
    super(`RTSP ${status} ${reason}`);
    this.status = status;
    this.response = response;
  }
}

export class RtspWsClient {
  // url: the ws:// or wss:// URL; rtspUrl: the RTSP URL requests name (same host and path).
  // askCredentials: async (realm) => ({ user, password }) or null to give up.
  constructor(url, rtspUrl, { askCredentials = async () => null, userAgent = 'rtsp-tunnel-relay player' } = {}) {
    this.url = url;
    this.rtspUrl = rtspUrl;
    this.askCredentials = askCredentials;
    this.userAgent = userAgent;
    this.onInterleaved = () => {};
    this.onClose = () => {};
    this.cseq = 0;
    this.pending = new Map(); // CSeq -> { resolve, reject }
    this.session = null;
    this.timeoutSecs = 60;
    this.auth = null; // { scheme, realm, nonce, opaque, qop, user, password, nc }
    this.publicMethods = [];
    this.buf = new Uint8Array(0);
    this.keepalive = null;
    this.closed = false;
  }

  // Opens the WebSocket; resolves once it is open.
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, 'rtsp.onvif.org');
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      ws.onopen = () => {
        if (ws.protocol !== 'rtsp.onvif.org') {
          reject(new Error(`server chose subprotocol "${ws.protocol}"`));
          ws.close();
          return;
        }
        resolve();
      };
      ws.onerror = () => reject(new Error(`WebSocket to ${this.url} failed`));
      ws.onmessage = (ev) => {
        if (typeof ev.data === 'string') return; // rtsp.onvif.org is binary only
        this.receive(new Uint8Array(ev.data));
      };
      ws.onclose = (ev) => this.finish(new Error(`WebSocket closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`));
    });
  }

  // Sends a request; resolves with the answer ({ status, reason, headers, body }), retrying once
  // with credentials after a 401. Rejects with RtspError on any other non-2xx answer.
  async request(method, url = this.rtspUrl, headers = {}, body = '') {
    for (let attempt = 0; ; attempt++) {
      const res = await this.send(method, url, headers, body);
      if (res.status === 401 && attempt < 3) {
        const challenge = pickChallenge(res.headers['www-authenticate'] || []);
        if (!challenge) throw new RtspError(res.status, res.reason, res);
        // A stale nonce only needs the new one; anything else asks the user again.
        const stale = this.auth && /^true$/i.test(challenge.params.stale || '');
        let creds = this.auth && stale ? this.auth : null;
        if (!creds) creds = await this.askCredentials(challenge.params.realm || '', attempt > 0);
        if (!creds) throw new RtspError(res.status, res.reason, res);
        this.auth = { ...challenge.params, scheme: challenge.scheme, user: creds.user, password: creds.password, nc: 0 };
        continue;
      }
      if (res.status < 200 || res.status >= 300) throw new RtspError(res.status, res.reason, res);
      return res;
    }
  }

  send(method, url, headers, body) {
    if (this.closed) return Promise.reject(new Error('connection closed'));
    const cseq = ++this.cseq;
    const lines = [`${method} ${url} RTSP/1.0`, `CSeq: ${cseq}`, `User-Agent: ${this.userAgent}`];
    if (this.session) lines.push(`Session: ${this.session}`);
    const authorization = this.authorization(method, url);
    if (authorization) lines.push(`Authorization: ${authorization}`);
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    const bodyBytes = new TextEncoder().encode(body);
    if (bodyBytes.length) lines.push(`Content-Length: ${bodyBytes.length}`);
    const head = new TextEncoder().encode(lines.join(CRLF) + CRLF + CRLF);
    const msg = new Uint8Array(head.length + bodyBytes.length);
    msg.set(head);
    msg.set(bodyBytes, head.length);
    return new Promise((resolve, reject) => {
      this.pending.set(cseq, { resolve, reject });
      this.ws.send(msg);
    });
  }

  authorization(method, uri) {
    const a = this.auth;
    if (!a) return null;
    if (a.scheme === 'basic') return 'Basic ' + btoa(unescape(encodeURIComponent(`${a.user}:${a.password}`)));
    const ha1 = md5(`${a.user}:${a.realm}:${a.password}`);
    const ha2 = md5(`${method}:${uri}`);
    const fields = [`username="${a.user}"`, `realm="${a.realm}"`, `nonce="${a.nonce}"`, `uri="${uri}"`];
    let response;
    if (a.qop && a.qop.split(',').map((s) => s.trim()).includes('auth')) {
      const nc = (++a.nc).toString(16).padStart(8, '0');
      const cnonce = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
      response = md5(`${ha1}:${a.nonce}:${nc}:${cnonce}:auth:${ha2}`);
      fields.push('qop=auth', `nc=${nc}`, `cnonce="${cnonce}"`);
    } else {
      response = md5(`${ha1}:${a.nonce}:${ha2}`);
    }
    fields.push(`response="${response}"`);
    if (a.opaque) fields.push(`opaque="${a.opaque}"`);
    if (a.algorithm) fields.push(`algorithm=${a.algorithm}`);
    return 'Digest ' + fields.join(', ');
  }

  // Bytes from the server: `$` frames and answers, in any cut.
  receive(chunk) {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    let pos = 0;
    while (pos < joined.length) {
      if (joined[pos] === 0x24) {
        if (joined.length - pos < 4) break;
        const len = (joined[pos + 2] << 8) | joined[pos + 3];
        if (joined.length - pos < 4 + len) break;
        this.onInterleaved(joined[pos + 1], joined.subarray(pos + 4, pos + 4 + len));
        pos += 4 + len;
        continue;
      }
      const used = this.parseMessage(joined, pos);
      if (used === 0) break;
      pos += used;
    }
    // Keep the unfinished tail (copied: the frames handed out above may still be referenced).
    this.buf = joined.slice(pos);
  }

  // Parses one RTSP message at `pos`; returns its length, or 0 when incomplete.
  parseMessage(bytes, pos) {
    let end = -1;
    for (let i = pos; i + 3 < bytes.length; i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) { end = i; break; }
    }
    if (end < 0) {
      if (bytes.length - pos > 65536) this.finish(new Error('RTSP head over 64 KiB'));
      return 0;
    }
    const lines = utf8.decode(bytes.subarray(pos, end)).split(CRLF);
    const headers = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      (headers[name] ||= []).push(line.slice(colon + 1).trim());
    }
    const length = Number((headers['content-length'] || ['0'])[0]) || 0;
    const total = end + 4 - pos + length;
    if (bytes.length - pos < total) return 0;
    const body = utf8.decode(bytes.subarray(end + 4, end + 4 + length));
    const status = /^RTSP\/\d\.\d (\d{3}) ?(.*)$/.exec(lines[0]);
    if (!status) return total; // a request from the server: nothing here answers those
    const first = (name) => (headers[name] || [])[0];
    const res = { status: Number(status[1]), reason: status[2], headers, body, header: first };
    const waiter = this.pending.get(Number(first('cseq')));
    if (waiter) {
      this.pending.delete(Number(first('cseq')));
      waiter.resolve(res);
    }
    return total;
  }

  // OPTIONS, DESCRIBE: resolves with the SDP text and the base URL its controls resolve against.
  async describe() {
    const options = await this.request('OPTIONS');
    this.publicMethods = (options.header('public') || '').split(',').map((s) => s.trim().toUpperCase());
    const res = await this.request('DESCRIBE', this.rtspUrl, { Accept: 'application/sdp' });
    const base = res.header('content-base') || res.header('content-location') || this.rtspUrl;
    return { sdp: res.body, base };
  }

  // SETUP one track over the WebSocket (interleaved channels `channel`, `channel + 1`).
  async setup(url, channel) {
    const res = await this.request('SETUP', url, { Transport: `RTP/AVP/TCP;unicast;interleaved=${channel}-${channel + 1}` });
    const session = res.header('session');
    if (session) {
      const [id, ...params] = session.split(';');
      this.session = id.trim();
      const timeout = params.map((p) => /^\s*timeout\s*=\s*(\d+)/i.exec(p)).find(Boolean);
      if (timeout) this.timeoutSecs = Number(timeout[1]);
    }
    return res;
  }

  async play(url = this.rtspUrl) {
    const res = await this.request('PLAY', url, { Range: 'npt=0.000-' });
    const method = this.publicMethods.includes('GET_PARAMETER') ? 'GET_PARAMETER' : 'OPTIONS';
    const every = Math.max(5, this.timeoutSecs / 2) * 1000;
    this.keepalive = setInterval(() => this.request(method, url).catch(() => {}), every);
    return res;
  }

  // TEARDOWN (best effort, not awaited past a second), then close the WebSocket normally.
  async close(url = this.rtspUrl) {
    if (this.closed) return;
    if (this.session) {
      await Promise.race([this.request('TEARDOWN', url).catch(() => {}), new Promise((r) => setTimeout(r, 1000))]);
    }
    this.ws.close(1000);
    this.finish(null);
  }

  finish(error) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepalive);
    for (const { reject } of this.pending.values()) reject(error || new Error('connection closed'));
    this.pending.clear();
    this.onClose(error);
  }
}

// The strongest challenge offered: Digest (MD5) before Basic.
function pickChallenge(values) {
  const challenges = values.map(parseChallenge).filter(Boolean);
  return (
    challenges.find((c) => c.scheme === 'digest' && /^(md5)?$/i.test(c.params.algorithm || '')) ||
    challenges.find((c) => c.scheme === 'basic') ||
    null
  );
}

function parseChallenge(value) {
  const m = /^(\w+)\s*(.*)$/.exec(value);
  if (!m) return null;
  const params = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p;
  while ((p = re.exec(m[2]))) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme: m[1].toLowerCase(), params };
}
