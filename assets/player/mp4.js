// Fragmented MP4 (ISO/IEC 14496-12) for Media Source Extensions: one video track, timescale =
// the RTP clock (90 kHz), so RTP timestamps are decode times unchanged.
// initSegment: ftyp + moov (avc1/avcC or hvc1/hvcC, empty sample tables, mvex/trex).
// mediaSegment: moof (mfhd, traf: tfhd default-base-is-moof, tfdt, trun with per-sample duration,
// size and flags) + mdat. Samples are NAL units with 4-byte lengths (lengthSizeMinusOne = 3).

const enc = new TextEncoder();

function u32(n) { return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]; }
function u16(n) { return [(n >> 8) & 0xff, n & 0xff]; }

// A box: size, type, then the parts (arrays of bytes or Uint8Arrays) concatenated.
function box(type, ...parts) {
  const size = 8 + parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(size);
  out.set(u32(size));
  out.set(enc.encode(type), 4);
  let o = 8;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

const full = (version, flags) => [version, (flags >> 16) & 0xff, (flags >> 8) & 0xff, flags & 0xff];
const MATRIX = [...u32(0x10000), ...u32(0), ...u32(0), ...u32(0), ...u32(0x10000), ...u32(0), ...u32(0), ...u32(0), ...u32(0x40000000)];

// config: { sampleEntry: 'avc1'|'hvc1', configBox: [type, bytes], width, height }.
export function initSegment(config, timescale = 90000) {
  const { width, height } = config;
  const ftyp = box('ftyp', enc.encode('isom'), u32(0x200), enc.encode('isomiso6mp41'), enc.encode(config.sampleEntry));
  const mvhd = box('mvhd', full(0, 0), u32(0), u32(0), u32(1000), u32(0), u32(0x10000), u16(0x100), new Uint8Array(10), MATRIX, new Uint8Array(24), u32(2));
  const tkhd = box('tkhd', full(0, 3), u32(0), u32(0), u32(1), u32(0), u32(0), new Uint8Array(8), u16(0), u16(0), u16(0), u16(0), MATRIX, u32(width << 16), u32(height << 16));
  const mdhd = box('mdhd', full(0, 0), u32(0), u32(0), u32(timescale), u32(0), u16(0x55c4), u16(0));
  const hdlr = box('hdlr', full(0, 0), u32(0), enc.encode('vide'), new Uint8Array(12), enc.encode('VideoHandler\0'));
  const sampleEntry = box(
    config.sampleEntry,
    new Uint8Array(6), u16(1), // reserved, data_reference_index
    new Uint8Array(16), u16(width), u16(height),
    u32(0x480000), u32(0x480000), u32(0), u16(1), new Uint8Array(32), u16(0x18), u16(0xffff),
    box(config.configBox[0], config.configBox[1]),
  );
  const stbl = box(
    'stbl',
    box('stsd', full(0, 0), u32(1), sampleEntry),
    box('stts', full(0, 0), u32(0)),
    box('stsc', full(0, 0), u32(0)),
    box('stsz', full(0, 0), u32(0), u32(0)),
    box('stco', full(0, 0), u32(0)),
  );
  const dinf = box('dinf', box('dref', full(0, 0), u32(1), box('url ', full(0, 1))));
  const minf = box('minf', box('vmhd', full(0, 1), new Uint8Array(8)), dinf, stbl);
  const trak = box('trak', tkhd, box('mdia', mdhd, hdlr, minf));
  const mvex = box('mvex', box('trex', full(0, 0), u32(1), u32(1), u32(0), u32(0), u32(0)));
  return concatAll([ftyp, box('moov', mvhd, trak, mvex)]);
}

// samples: [{ duration, keyframe, nalus }] in decode order, the first at baseDecodeTime.
export function mediaSegment(sequence, baseDecodeTime, samples) {
  const payloads = samples.map((s) => lengthPrefixed(s.nalus));
  const trunEntries = [];
  samples.forEach((s, i) => {
    // sample_depends_on = 2 (key) or 1 with is_non_sync_sample (others).
    trunEntries.push(...u32(s.duration), ...u32(payloads[i].length), ...u32(s.keyframe ? 0x02000000 : 0x01010000));
  });
  const trun = (offset) => box('trun', full(0, 0x000701), u32(samples.length), u32(offset), trunEntries);
  const tfdt = box('tfdt', full(1, 0), u32(Math.floor(baseDecodeTime / 2 ** 32)), u32(baseDecodeTime >>> 0));
  const traf = (offset) => box('traf', box('tfhd', full(0, 0x020000), u32(1)), tfdt, trun(offset));
  const mfhd = box('mfhd', full(0, 0), u32(sequence));
  // data_offset counts from the moof's first byte to the first sample in mdat.
  const moofSize = box('moof', mfhd, traf(0)).length;
  const moof = box('moof', mfhd, traf(moofSize + 8));
  return concatAll([moof, box('mdat', ...payloads)]);
}

function lengthPrefixed(nalus) {
  const out = new Uint8Array(nalus.reduce((n, x) => n + 4 + x.length, 0));
  let o = 0;
  for (const n of nalus) {
    out.set(u32(n.length), o);
    out.set(n, o + 4);
    o += 4 + n.length;
  }
  return out;
}

function concatAll(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
