// Reading H.264/H.265 parameter sets: the NAL payload without emulation-prevention bytes (the
// 0x03 in 00 00 03), and an MSB-first bit reader with Exp-Golomb codes (ue(v), se(v)).

export function unescapeRbsp(nal) {
  const out = new Uint8Array(nal.length);
  let n = 0;
  let zeros = 0;
  for (const b of nal) {
    if (zeros >= 2 && b === 3) { zeros = 0; continue; }
    out[n++] = b;
    zeros = b === 0 ? zeros + 1 : 0;
  }
  return out.subarray(0, n);
}

export class BitReader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0; // in bits
  }

  bit() {
    if (this.pos >= this.bytes.length * 8) throw new Error('parameter set ends early');
    const b = (this.bytes[this.pos >> 3] >> (7 - (this.pos & 7))) & 1;
    this.pos++;
    return b;
  }

  bits(n) {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 2 + this.bit();
    return v;
  }

  skip(n) {
    this.pos += n;
  }

  ue() {
    let zeros = 0;
    while (this.bit() === 0) if (++zeros > 31) throw new Error('bad Exp-Golomb code');
    return 2 ** zeros - 1 + this.bits(zeros);
  }

  se() {
    const k = this.ue();
    return k & 1 ? (k + 1) / 2 : -k / 2;
  }
}
