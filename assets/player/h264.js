// H.264 over RTP (RFC 6184) to access units, and the decoder configuration MSE needs.
// Packetisation modes 0 and 1: single NAL unit packets, STAP-A (24) and FU-A (28). SPS and PPS
// come from the SDP's sprop-parameter-sets and from the stream itself (cameras repeat them before
// keyframes); the latest ones make the avcC record and the `avc1.PPCCLL` codec string.

import { BitReader, unescapeRbsp } from './bits.js';
import { Depacketizer, concat, splitAggregate } from './rtp.js';
import { base64Bytes } from './sdp.js';

const SPS = 7, PPS = 8, AUD = 9, IDR = 5, STAP_A = 24, FU_A = 28;

export class H264Depacketizer extends Depacketizer {
  constructor(fmtp = {}) {
    super();
    this.sps = null;
    this.pps = null;
    this.fu = null; // fragments of the FU-A being reassembled, or null
    for (const b64 of (fmtp['sprop-parameter-sets'] || '').split(',').filter(Boolean)) {
      try { this.paramSet(base64Bytes(b64)); } catch { /* a bad sprop: wait for in-band ones */ }
    }
  }

  unpack(payload, out, gap) {
    if (gap) this.fu = null; // a lost fragment spoils the NAL unit being rebuilt
    const type = payload[0] & 0x1f;
    if (type >= 1 && type <= 23) out.push(payload);
    else if (type === STAP_A) splitAggregate(payload, 1, out);
    else if (type === FU_A && payload.length > 2) {
      const start = payload[1] & 0x80, end = payload[1] & 0x40;
      if (start) this.fu = [Uint8Array.of((payload[0] & 0xe0) | (payload[1] & 0x1f))];
      if (!this.fu) return;
      this.fu.push(payload.subarray(2));
      if (end) {
        out.push(concat(this.fu));
        this.fu = null;
      }
    }
  }

  paramSet(nal) {
    const type = nal[0] & 0x1f;
    if (type === SPS) this.store('sps', nal);
    else if (type === PPS) this.store('pps', nal);
    return type === SPS || type === PPS || type === AUD;
  }

  isKey(nal) {
    return (nal[0] & 0x1f) === IDR;
  }

  // { codec, sampleEntry, configBox, width, height } once SPS and PPS are known.
  get config() {
    if (!this.sps || !this.pps) return null;
    const { width, height } = spsSize(this.sps);
    const hex = (b) => b.toString(16).padStart(2, '0');
    const avcC = new Uint8Array(11 + this.sps.length + this.pps.length);
    avcC.set([1, this.sps[1], this.sps[2], this.sps[3], 0xff, 0xe1, this.sps.length >> 8, this.sps.length & 0xff]);
    avcC.set(this.sps, 8);
    const p = 8 + this.sps.length;
    avcC.set([1, this.pps.length >> 8, this.pps.length & 0xff], p);
    avcC.set(this.pps, p + 3);
    return {
      codec: `avc1.${hex(this.sps[1])}${hex(this.sps[2])}${hex(this.sps[3])}`,
      sampleEntry: 'avc1',
      configBox: ['avcC', avcC],
      width,
      height,
    };
  }
}

// Picture size from an SPS (ITU-T H.264 §7.3.2.1.1), cropping applied.
export function spsSize(sps) {
  const r = new BitReader(unescapeRbsp(sps.subarray(1)));
  const profile = r.bits(8);
  r.skip(16); // constraint flags, level
  r.ue(); // seq_parameter_set_id
  let chroma = 1;
  if ([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].includes(profile)) {
    chroma = r.ue();
    if (chroma === 3) r.skip(1);
    r.ue(); r.ue(); r.skip(1); // bit depths, qpprime_y_zero_transform_bypass
    if (r.bit()) {
      for (let i = 0; i < (chroma === 3 ? 12 : 8); i++) {
        if (!r.bit()) continue;
        let last = 8, next = 8;
        for (let j = 0; j < (i < 6 ? 16 : 64) && next !== 0; j++) {
          next = (last + r.se() + 256) % 256;
          if (next !== 0) last = next;
        }
      }
    }
  }
  r.ue(); // log2_max_frame_num_minus4
  const pocType = r.ue();
  if (pocType === 0) r.ue();
  else if (pocType === 1) {
    r.skip(1); r.se(); r.se();
    const n = r.ue();
    for (let i = 0; i < n; i++) r.se();
  }
  r.ue(); r.skip(1); // max_num_ref_frames, gaps_in_frame_num_allowed
  const wMbs = r.ue() + 1;
  const hMaps = r.ue() + 1;
  const frameMbsOnly = r.bit();
  if (!frameMbsOnly) r.skip(1);
  r.skip(1); // direct_8x8_inference
  let width = wMbs * 16;
  let height = (2 - frameMbsOnly) * hMaps * 16;
  if (r.bit()) {
    const [l, rt, t, b] = [r.ue(), r.ue(), r.ue(), r.ue()];
    const cx = chroma === 0 || chroma === 3 ? 1 : 2;
    const cy = (chroma === 1 ? 2 : 1) * (2 - frameMbsOnly);
    width -= cx * (l + rt);
    height -= cy * (t + b);
  }
  return { width, height };
}
