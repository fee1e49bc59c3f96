// RTP (RFC 3550) packets to video frames. parseRtp reads the fixed header, CSRCs, extension and
// padding. Depacketizer is the codec-independent half of H.264/H.265 depacketisation: it groups
// NAL units into access units (one per RTP timestamp; the marker bit ends one early), drops a
// fragmented NAL unit that lost a packet, keeps parameter sets out of the samples (they go to
// the decoder configuration instead) and extends the 32-bit timestamp so it never wraps.
// Subclasses supply unpack(payload, out, seqGap), paramSet(nal) and isKey(nal).

export function parseRtp(p) {
  if (p.length < 12 || p[0] >> 6 !== 2) return null;
  const csrcs = p[0] & 0x0f;
  let offset = 12 + csrcs * 4;
  if (p[0] & 0x10) {
    if (p.length < offset + 4) return null;
    offset += 4 + ((p[offset + 2] << 8) | p[offset + 3]) * 4;
  }
  let end = p.length;
  if (p[0] & 0x20) end -= p[p.length - 1];
  if (end < offset) return null;
  return {
    marker: (p[1] & 0x80) !== 0,
    payloadType: p[1] & 0x7f,
    seq: (p[2] << 8) | p[3],
    timestamp: ((p[4] << 24) | (p[5] << 16) | (p[6] << 8) | p[7]) >>> 0,
    payload: p.subarray(offset, end),
  };
}

export class Depacketizer {
  constructor() {
    this.nalus = [];
    this.timestamp = null; // extended timestamp of the access unit being collected
    this.lastSeq = null;
    this.lastRaw = null;
    this.extended = 0;
    this.configVersion = 0; // bumps whenever a parameter set changes
  }

  // One RTP packet in; the access units it completed out: { timestamp, keyframe, nalus }.
  push(packet) {
    const rtp = parseRtp(packet);
    if (!rtp) return [];
    const gap = this.lastSeq !== null && rtp.seq !== ((this.lastSeq + 1) & 0xffff);
    this.lastSeq = rtp.seq;
    const ts = this.extend(rtp.timestamp);
    const done = [];
    if (this.timestamp !== null && ts !== this.timestamp) this.flush(done);
    this.timestamp = ts;
    const nals = [];
    this.unpack(rtp.payload, nals, gap);
    for (const nal of nals) if (nal.length && !this.paramSet(nal)) this.nalus.push(nal);
    if (rtp.marker) this.flush(done);
    return done;
  }

  flush(done) {
    if (this.nalus.length) {
      done.push({ timestamp: this.timestamp, keyframe: this.nalus.some((n) => this.isKey(n)), nalus: this.nalus });
    }
    this.nalus = [];
  }

  // 32-bit RTP timestamps to a monotonic count (wraps every 13 h at 90 kHz).
  extend(raw) {
    if (this.lastRaw === null) this.extended = raw;
    else {
      let delta = (raw - this.lastRaw) | 0; // signed 32-bit difference
      this.extended += delta;
    }
    this.lastRaw = raw;
    return this.extended;
  }

  // Saves a parameter set; bumps configVersion when it differs from the stored one.
  store(key, nal) {
    const old = this[key];
    if (old && old.length === nal.length && old.every((b, i) => b === nal[i])) return;
    this[key] = nal.slice();
    this.configVersion++;
  }
}

// Two-byte big-endian length-prefixed NAL units, as STAP-A and AP aggregate them.
export function splitAggregate(payload, start, out) {
  let i = start;
  while (i + 2 <= payload.length) {
    const len = (payload[i] << 8) | payload[i + 1];
    i += 2;
    if (len === 0 || i + len > payload.length) break;
    out.push(payload.subarray(i, i + len));
    i += len;
  }
}

// Joins fragments of one NAL unit (FU-A, H.265 FU).
export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
