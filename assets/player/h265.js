// H.265 over RTP (RFC 7798) to access units, and the hvcC decoder configuration. Single NAL unit
// packets, aggregation packets (48) and fragmentation units (49), without DONL (sprop-max-don-diff
// absent or 0, as cameras send). VPS/SPS/PPS come from sprop-vps/sps/pps and from the stream.
// Playable only where MediaSource.isTypeSupported says so (Safari, Edge, Chrome with platform
// HEVC); the player checks before choosing it.

import { BitReader, unescapeRbsp } from './bits.js';
import { Depacketizer, concat, splitAggregate } from './rtp.js';
import { base64Bytes } from './sdp.js';

const VPS = 32, SPS = 33, PPS = 34, AUD = 35, AP = 48, FU = 49;
const nalType = (nal) => (nal[0] >> 1) & 0x3f;

export class H265Depacketizer extends Depacketizer {
  constructor(fmtp = {}) {
    super();
    this.vps = this.sps = this.pps = null;
    this.fu = null;
    for (const key of ['sprop-vps', 'sprop-sps', 'sprop-pps']) {
      for (const b64 of (fmtp[key] || '').split(',').filter(Boolean)) {
        try { this.paramSet(base64Bytes(b64)); } catch { /* wait for in-band ones */ }
      }
    }
  }

  unpack(payload, out, gap) {
    if (gap) this.fu = null;
    if (payload.length < 3) return;
    const type = nalType(payload);
    if (type < AP) out.push(payload);
    else if (type === AP) splitAggregate(payload, 2, out);
    else if (type === FU) {
      const h = payload[2];
      if (h & 0x80) this.fu = [Uint8Array.of((payload[0] & 0x81) | ((h & 0x3f) << 1), payload[1])];
      if (!this.fu) return;
      this.fu.push(payload.subarray(3));
      if (h & 0x40) {
        out.push(concat(this.fu));
        this.fu = null;
      }
    }
  }

  paramSet(nal) {
    const type = nalType(nal);
    if (type === VPS) this.store('vps', nal);
    else if (type === SPS) this.store('sps', nal);
    else if (type === PPS) this.store('pps', nal);
    return type >= VPS && type <= AUD;
  }

  isKey(nal) {
    const t = nalType(nal);
    return t >= 16 && t <= 21; // IRAP pictures
  }

  get config() {
    if (!this.vps || !this.sps || !this.pps) return null;
    const s = parseSps(this.sps);
    const arrays = [[VPS, this.vps], [SPS, this.sps], [PPS, this.pps]];
    const hvcC = new Uint8Array(23 + arrays.reduce((n, [, nal]) => n + 5 + nal.length, 0));
    hvcC.set([1, (s.profileSpace << 6) | (s.tier << 5) | s.profileIdc]);
    hvcC.set(s.compat, 2);
    hvcC.set(s.constraints, 6);
    hvcC.set([s.levelIdc, 0xf0, 0x00, 0xfc, 0xfc | s.chroma, 0xf8 | s.depthLuma, 0xf8 | s.depthChroma, 0, 0], 12);
    hvcC[21] = (s.subLayers << 3) | (s.nested << 2) | 3; // lengthSizeMinusOne = 3
    hvcC[22] = arrays.length;
    let o = 23;
    for (const [type, nal] of arrays) {
      hvcC.set([0x80 | type, 0, 1, nal.length >> 8, nal.length & 0xff, ...nal], o);
      o += 5 + nal.length;
    }
    return { codec: codecString(s), sampleEntry: 'hvc1', configBox: ['hvcC', hvcC], width: s.width, height: s.height };
  }
}

// The SPS fields hvcC and the codec string need (ITU-T H.265 §7.3.2.2, §7.3.3).
function parseSps(sps) {
  const rbsp = unescapeRbsp(sps.subarray(2));
  const r = new BitReader(rbsp);
  r.skip(4);
  const maxSubLayersMinus1 = r.bits(3);
  const nested = r.bit();
  const profileSpace = r.bits(2), tier = r.bit(), profileIdc = r.bits(5);
  const compat = rbsp.slice(2, 6);
  r.skip(32);
  const constraints = rbsp.slice(6, 12);
  r.skip(48);
  const levelIdc = r.bits(8);
  const present = [];
  for (let i = 0; i < maxSubLayersMinus1; i++) present.push([r.bit(), r.bit()]);
  if (maxSubLayersMinus1 > 0) r.skip(2 * (8 - maxSubLayersMinus1));
  for (const [profile, level] of present) r.skip((profile ? 88 : 0) + (level ? 8 : 0));
  r.ue(); // sps_seq_parameter_set_id
  const chroma = r.ue();
  if (chroma === 3) r.skip(1);
  let width = r.ue(), height = r.ue();
  if (r.bit()) {
    const [l, rt, t, b] = [r.ue(), r.ue(), r.ue(), r.ue()];
    const sx = chroma === 1 || chroma === 2 ? 2 : 1, sy = chroma === 1 ? 2 : 1;
    width -= sx * (l + rt);
    height -= sy * (t + b);
  }
  const depthLuma = r.ue(), depthChroma = r.ue();
  return { profileSpace, tier, profileIdc, compat, constraints, levelIdc, chroma, width, height, depthLuma, depthChroma, subLayers: maxSubLayersMinus1 + 1, nested };
}

// ISO/IEC 14496-15 Annex E: hvc1.<space><profile>.<compat, bit-reversed hex>.<tier><level>.<constraints>
function codecString(s) {
  const flags = ((s.compat[0] << 24) | (s.compat[1] << 16) | (s.compat[2] << 8) | s.compat[3]) >>> 0;
  let reversed = 0;
  for (let i = 0; i < 32; i++) reversed = (reversed * 2) + ((flags >>> i) & 1);
  const cons = Array.from(s.constraints);
  while (cons.length > 1 && cons[cons.length - 1] === 0) cons.pop();
  const space = ['', 'A', 'B', 'C'][s.profileSpace];
  return `hvc1.${space}${s.profileIdc}.${reversed.toString(16).toUpperCase()}.${s.tier ? 'H' : 'L'}${s.levelIdc}.${cons.map((b) => b.toString(16).toUpperCase()).join('.')}`;
}
