// The parts of an SDP description (RFC 8866) the player needs: for each media section its type,
// RTP payload type, codec name and clock rate (a=rtpmap), format parameters (a=fmtp: the
// parameter sets cameras announce in sprop-*), and control URL resolved against the base.

export function parseSdp(text, baseUrl) {
  const session = { control: null, media: [] };
  let current = null;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      const [type, , , fmt] = line.slice(2).split(/\s+/);
      current = { type, payloadType: Number(fmt), codec: null, clockRate: 90000, fmtp: {}, control: null };
      session.media.push(current);
    } else if (line.startsWith('a=control:')) {
      const value = line.slice('a=control:'.length).trim();
      (current || session).control = value;
    } else if (current && line.startsWith('a=rtpmap:')) {
      const m = /^a=rtpmap:(\d+)\s+([^/\s]+)\/(\d+)/.exec(line);
      if (m && Number(m[1]) === current.payloadType) {
        current.codec = m[2].toUpperCase();
        current.clockRate = Number(m[3]);
      }
    } else if (current && line.startsWith('a=fmtp:')) {
      const m = /^a=fmtp:(\d+)\s+(.*)$/.exec(line);
      if (m && Number(m[1]) === current.payloadType) {
        for (const kv of m[2].split(';')) {
          const eq = kv.indexOf('=');
          if (eq > 0) current.fmtp[kv.slice(0, eq).trim().toLowerCase()] = kv.slice(eq + 1).trim();
        }
      }
    }
  }
  const sessionBase = resolveControl(baseUrl, session.control);
  session.url = sessionBase;
  for (const m of session.media) m.url = resolveControl(sessionBase, m.control);
  return session;
}

// RFC 2326 C.1.1: "*" or no control means the base itself; relative URLs resolve against the base
// (which the caller took from Content-Base, Content-Location or the request URL).
function resolveControl(base, control) {
  if (!control || control === '*') return base;
  if (/^[a-z][a-z0-9+.-]*:/i.test(control)) return control;
  const dir = base.endsWith('/') ? base : base + '/';
  return dir + control.replace(/^\//, '');
}

// Base64 to bytes (sprop-parameter-sets and friends).
export function base64Bytes(b64) {
  const bin = atob(b64.trim());
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
