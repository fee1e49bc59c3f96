//! The PROXY protocol header a load balancer (HAProxy `send-proxy-v2`, or `send-proxy` for the
//! v1 text line) puts before a connection's first byte, naming the viewer's address so that logs,
//! address lists and per-address limits judge the viewer rather than the balancer.
//!
//! [`parse`] is fed the bytes received so far on a connection (the accumulated prefix, however
//! the network cut it) and says whether a whole header is there: [`ProxyHeader::Incomplete`]
//! until it is, then the addresses and how many bytes the header took, or why the bytes are not
//! a header the relay accepts. It never reads past the header, so whatever follows (an HTTP
//! request head, an RTSP request or a TLS ClientHello) is left to the next parser untouched.
//! Bounded: a v1 line is at most 107 bytes, a v2 header at most 16 + 65,535 and no more than the
//! caller's `max_len`, decided from its first 16 bytes, so an oversized header is refused before
//! it is buffered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every v2 header starts with (chosen to be invalid as HTTP, RTSP and TLS).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Fixed part of a v2 header: signature, version/command, family/transport, length.
pub const V2_FIXED_LEN: usize = 16;
/// The largest v2 header the format can express.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;
/// The longest v1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6 addresses).
pub const V1_MAX_LEN: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Not enough bytes yet to decide: read more (the head timeout still applies).
    Incomplete,
    /// The balancer relayed a connection from `source` to `destination`; the first
    /// `header_len` bytes were the header.
    Parsed { source: SocketAddr, destination: SocketAddr, header_len: usize },
    /// A header without usable addresses (v2 `LOCAL`, the balancer's own health check; v2
    /// `AF_UNSPEC`/`AF_UNIX`; v1 `UNKNOWN`): keep the connection's own addresses, skip
    /// `header_len` bytes.
    Local { header_len: usize },
    /// Not a header the relay accepts: close the connection.
    Invalid(Invalid),
}

/// Why the bytes are not an acceptable PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Neither the v2 signature nor `PROXY `.
    NotProxy,
    /// A v2 version other than 2, or a command other than LOCAL/PROXY.
    BadVersion,
    /// A v2 address family or transport the relay cannot use (UDP, or unknown values).
    BadFamily,
    /// Longer than the caller's limit.
    TooLarge,
    /// A v2 length too short for the addresses of its family.
    ShortAddresses,
    /// A v2 TLV running past the header.
    BadTlv,
    /// A v1 line that is not `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN...\r\n`.
    BadV1,
}

impl Invalid {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::NotProxy => "not_proxy",
            Invalid::BadVersion => "bad_version",
            Invalid::BadFamily => "bad_family",
            Invalid::TooLarge => "too_large",
            Invalid::ShortAddresses => "short_addresses",
            Invalid::BadTlv => "bad_tlv",
            Invalid::BadV1 => "bad_v1",
        }
    }
}

/// Whether `input` starts like a PROXY header (v1 or v2) as far as it goes: a connection from a
/// source not trusted to send one is refused when this holds, instead of having its header
/// parsed as a request. An empty input does not.
pub fn starts_like_header(input: &[u8]) -> bool {
    let is_prefix = |sig: &[u8]| {
        let n = input.len().min(sig.len());
        n > 0 && input[..n] == sig[..n]
    };
    is_prefix(&V2_SIGNATURE) || is_prefix(V1_PREFIX)
}

/// Parses the PROXY header at the start of `input` (the bytes received so far). `max_len` caps
/// the header (clamped to at least [`V1_MAX_LEN`], at most [`V2_MAX_LEN`]); the answer for a
/// prefix is never contradicted by more bytes, except that `Incomplete` turns into a verdict.
pub fn parse(input: &[u8], max_len: usize) -> ProxyHeader {
    let max_len = max_len.clamp(V1_MAX_LEN, V2_MAX_LEN);
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() { ProxyHeader::Incomplete } else { parse_v2(input, max_len) };
    }
    let n = input.len().min(V1_PREFIX.len());
    if input[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() { ProxyHeader::Incomplete } else { parse_v1(input) };
    }
    ProxyHeader::Invalid(Invalid::NotProxy)
}

fn parse_v2(input: &[u8], max_len: usize) -> ProxyHeader {
    let invalid = ProxyHeader::Invalid;
    let Some(&ver_cmd) = input.get(12) else { return ProxyHeader::Incomplete };
    let (version, command) = (ver_cmd >> 4, ver_cmd & 0x0f);
    if version != 2 || command > 1 {
        return invalid(Invalid::BadVersion);
    }
    let Some(&fam) = input.get(13) else { return ProxyHeader::Incomplete };
    let (family, transport) = (fam >> 4, fam & 0x0f);
    // Families: 0 unspec, 1 inet, 2 inet6, 3 unix; transports: 0 unspec, 1 stream, 2 dgram.
    if family > 3 || transport > 2 {
        return invalid(Invalid::BadFamily);
    }
    let Some(len) = input.get(14..16) else { return ProxyHeader::Incomplete };
    let header_len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([len[0], len[1]]));
    if header_len > max_len {
        return invalid(Invalid::TooLarge);
    }
    let addr_len = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if header_len - V2_FIXED_LEN < addr_len {
        return invalid(Invalid::ShortAddresses);
    }
    // A tunnel is a TCP connection: a proxied datagram flow is not something to relay.
    if command == 1 && family != 0 && transport != 1 {
        return invalid(Invalid::BadFamily);
    }
    let Some(header) = input.get(..header_len) else { return ProxyHeader::Incomplete };
    let body = &header[V2_FIXED_LEN..];
    // TLVs (type, 16-bit length, value) fill the rest exactly; none is needed, all are skipped.
    let mut tlvs = &body[addr_len..];
    while !tlvs.is_empty() {
        let Some(len) = tlvs.get(1..3) else { return invalid(Invalid::BadTlv) };
        let end = 3 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        match tlvs.get(end..) {
            Some(rest) => tlvs = rest,
            None => return invalid(Invalid::BadTlv),
        }
    }
    if command == 0 {
        return ProxyHeader::Local { header_len };
    }
    let (source, destination) = match family {
        1 => {
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(body[i], body[i + 1], body[i + 2], body[i + 3]));
            let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
        }
        2 => {
            // Invariant: `addr_len` (36) was checked within the header: body[i..i + 16] is 16 bytes.
            let ip = |i: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&body[i..i + 16]).unwrap()));
            let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
        }
        _ => return ProxyHeader::Local { header_len },
    };
    ProxyHeader::Parsed { source, destination, header_len }
}

fn parse_v1(input: &[u8]) -> ProxyHeader {
    let invalid = ProxyHeader::Invalid(Invalid::BadV1);
    let window = &input[..input.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| !(b == b' ' || b.is_ascii_graphic())) else {
        return if input.len() >= V1_MAX_LEN { invalid } else { ProxyHeader::Incomplete };
    };
    // The first byte that is not printable must be the CR of the closing CRLF.
    if window[cr] != b'\r' {
        return invalid;
    }
    match input.get(cr + 1) {
        None if cr + 2 <= V1_MAX_LEN => return ProxyHeader::Incomplete,
        Some(b'\n') if cr + 2 <= V1_MAX_LEN => {}
        _ => return invalid,
    }
    let header_len = cr + 2;
    // Printable ASCII only, so this is valid UTF-8.
    let line = std::str::from_utf8(&input[V1_PREFIX.len()..cr]).unwrap_or("");
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return ProxyHeader::Local { header_len };
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else { return invalid };
    let ip = |s: &str| -> Option<IpAddr> {
        match proto {
            "TCP4" => s.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            _ => None,
        }
    };
    // Decimal 0..=65535, no sign, no leading zero.
    let port = |s: &str| -> Option<u16> {
        let ok =
            !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        if ok { s.parse().ok() } else { None }
    };
    match (ip(src), ip(dst), port(sport), port(dport)) {
        (Some(s), Some(d), Some(sp), Some(dp)) => {
            ProxyHeader::Parsed { source: SocketAddr::new(s, sp), destination: SocketAddr::new(d, dp), header_len }
        }
        _ => invalid,
    }
}

/// What the accept path does with a connection's first bytes when PROXY protocol is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Read more bytes first (the head timeout still applies).
    NeedMore,
    /// Skip the first `skip` bytes (the header, if any); `source`, when given, is the viewer's
    /// address from then on.
    Proceed { skip: usize, source: Option<SocketAddr> },
    /// Close the connection without a reply.
    Refuse(Refusal),
}

/// Why [`gate`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A trusted balancer's connection that does not start with a valid header.
    BadHeader(Invalid),
    /// A header from a source not trusted to send one: it would name any address it liked.
    Untrusted,
}

/// Decides on the first bytes of a connection (`input`, all received so far, before any TLS):
/// from a `trusted` balancer a header must come first (at most `max_len` bytes, see [`parse`]);
/// from anyone else none may, and whatever else comes is left untouched.
pub fn gate(trusted: bool, input: &[u8], max_len: usize) -> Gate {
    if trusted {
        return match parse(input, max_len) {
            ProxyHeader::Incomplete => Gate::NeedMore,
            ProxyHeader::Parsed { source, header_len, .. } => Gate::Proceed { skip: header_len, source: Some(source) },
            ProxyHeader::Local { header_len } => Gate::Proceed { skip: header_len, source: None },
            ProxyHeader::Invalid(why) => Gate::Refuse(Refusal::BadHeader(why)),
        };
    }
    // Nothing read yet (an empty read) says nothing: proceeding would take a header that
    // follows for the request.
    if input.is_empty() {
        return Gate::NeedMore;
    }
    if !starts_like_header(input) {
        return Gate::Proceed { skip: 0, source: None };
    }
    // Only a whole signature decides: `P` may still become `POST`.
    let whole = |sig: &[u8]| input.len() >= sig.len() && input[..sig.len()] == *sig;
    if whole(&V2_SIGNATURE) || whole(V1_PREFIX) { Gate::Refuse(Refusal::Untrusted) } else { Gate::NeedMore }
}

/// A v2 PROXY header for a TCP connection from `source` to `destination` (both of one family),
/// followed by `tlvs` (type, value) pairs: what HAProxy's `send-proxy-v2` sends. For tests and
/// test clients that stand in for a balancer.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut addrs = Vec::with_capacity(36);
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            addrs.extend_from_slice(&v6(s).octets());
            addrs.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    addrs.extend_from_slice(&source.port().to_be_bytes());
    addrs.extend_from_slice(&destination.port().to_be_bytes());
    for (kind, value) in tlvs {
        addrs.push(*kind);
        addrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        addrs.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(V2_FIXED_LEN + addrs.len());
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[0x21, family]);
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&addrs);
    out
}

/// A v2 LOCAL header (a balancer's own health check), no addresses.
pub fn encode_v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0, 0]);
    out
}

/// The v1 text line for a TCP connection from `source` to `destination` (HAProxy `send-proxy`).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let proto = if source.is_ipv4() && destination.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {proto} {} {} {} {}\r\n", source.ip(), destination.ip(), source.port(), destination.port())
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 4096;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// What HAProxy 2.6 (`server ... send-proxy-v2`, no TLVs configured) sent ahead of a
    /// viewer's first bytes, captured: viewer 127.0.0.9:53021, frontend 127.0.0.1:18080.
    const HAPROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x09\x7f\x00\x00\x01\xcf\x1d\x46\xa0";

    #[test]
    fn v2_ipv4_then_the_request_is_left_untouched() {
        let mut input = HAPROXY_V2.to_vec();
        input.extend_from_slice(b"GET /cam1 HTTP/1.0\r\n");
        let (source, destination) = (sa("127.0.0.9:53021"), sa("127.0.0.1:18080"));
        assert_eq!(parse(&input, MAX), ProxyHeader::Parsed { source, destination, header_len: 28 });
        assert_eq!(&input[28..], b"GET /cam1 HTTP/1.0\r\n");
        assert_eq!(encode_v2(source, destination, &[]), HAPROXY_V2);
    }

    #[test]
    fn v2_ipv6_with_tlvs_skipped() {
        let (s, d) = (sa("[2001:db8::7]:40000"), sa("[2001:db8::1]:443"));
        // ALPN, authority, unique id, a NOOP padding TLV with an empty value, CRC32C.
        let tlvs: &[(u8, &[u8])] =
            &[(0x01, b"http/1.1"), (0x02, b"relay.example"), (0x05, b"abc"), (0x04, b""), (0x03, b"\0\0\0\0")];
        let h = encode_v2(s, d, tlvs);
        assert_eq!(parse(&h, MAX), ProxyHeader::Parsed { source: s, destination: d, header_len: h.len() });
    }

    #[test]
    fn v2_local_and_unspec_keep_the_connection_addresses() {
        assert_eq!(parse(&encode_v2_local(), MAX), ProxyHeader::Local { header_len: 16 });
        // PROXY command with AF_UNSPEC: addresses unknown.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(parse(&h, MAX), ProxyHeader::Local { header_len: 16 });
        // AF_UNIX stream: no IP to judge either.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x31, 0, 216]);
        h.extend_from_slice(&[0; 216]);
        assert_eq!(parse(&h, MAX), ProxyHeader::Local { header_len: 232 });
    }

    #[test]
    fn v2_refusals() {
        let with = |b12: u8, b13: u8, len: u16, body: &[u8]| {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[b12, b13]);
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(body);
            parse(&h, MAX)
        };
        let bad = ProxyHeader::Invalid;
        assert_eq!(with(0x11, 0x11, 12, &[0; 12]), bad(Invalid::BadVersion), "version 1 in binary");
        assert_eq!(with(0x22, 0x11, 12, &[0; 12]), bad(Invalid::BadVersion), "command 2");
        assert_eq!(with(0x21, 0x41, 12, &[0; 12]), bad(Invalid::BadFamily));
        assert_eq!(with(0x21, 0x12, 12, &[0; 12]), bad(Invalid::BadFamily), "UDP");
        assert_eq!(with(0x21, 0x13, 12, &[0; 12]), bad(Invalid::BadFamily), "transport 3");
        assert_eq!(with(0x21, 0x11, 8, &[0; 8]), bad(Invalid::ShortAddresses));
        assert_eq!(with(0x21, 0x21, 12, &[0; 12]), bad(Invalid::ShortAddresses));
        // Decided from the length field alone, before the body is buffered.
        assert_eq!(with(0x21, 0x11, 5000, &[]), bad(Invalid::TooLarge));
        assert_eq!(with(0x21, 0x11, u16::MAX, &[]), bad(Invalid::TooLarge));
        // A TLV whose length runs past the header; a TLV cut inside its type/length.
        let mut body = vec![0; 12];
        body.extend_from_slice(&[0x05, 0, 9, b'x']);
        assert_eq!(with(0x21, 0x11, 16, &body), bad(Invalid::BadTlv));
        assert_eq!(with(0x21, 0x11, 14, &[0; 14]), bad(Invalid::BadTlv));
    }

    #[test]
    fn the_limit_is_clamped_to_what_the_format_allows() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        h.extend_from_slice(&[0; 12]);
        h.extend_from_slice(&[0x04, 0xff, 0xff - 15]);
        h.resize(V2_MAX_LEN, 0);
        assert_eq!(
            parse(&h, usize::MAX),
            ProxyHeader::Parsed { source: sa("0.0.0.0:0"), destination: sa("0.0.0.0:0"), header_len: V2_MAX_LEN }
        );
        // A limit below a v1 line still admits one.
        let line = encode_v1(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:2"));
        assert!(matches!(parse(&line, 0), ProxyHeader::Parsed { .. }));
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 80\r\nDESCRIBE rtsp://h/cam1 RTSP/1.0\r\n";
        assert_eq!(
            parse(line, MAX),
            ProxyHeader::Parsed { source: sa("192.0.2.10:51000"), destination: sa("198.51.100.1:80"), header_len: 45 }
        );
        let v6 = encode_v1(sa("[2001:db8::7]:40000"), sa("[::1]:80"));
        assert_eq!(v6, b"PROXY TCP6 2001:db8::7 ::1 40000 80\r\n");
        assert!(matches!(parse(&v6, MAX), ProxyHeader::Parsed { header_len: 37, .. }));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n", MAX), ProxyHeader::Local { header_len: 15 });
        assert_eq!(parse(b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\nGET", MAX), ProxyHeader::Local { header_len: 33 });
        for bad in [
            &b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 80\n"[..],
            b"PROXY TCP4 192.0.2.10 198.51.100.1 51000\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 80 9\r\n",
            b"PROXY TCP4 192.0.2.10  198.51.100.1 51000 80\r\n",
            b"PROXY TCP4 2001:db8::7 198.51.100.1 51000 80\r\n",
            b"PROXY TCP6 192.0.2.10 ::1 51000 80\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 80\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 051000 80\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 +5 80\r\n",
            b"PROXY UDP4 192.0.2.10 198.51.100.1 51000 80\r\n",
            b"PROXY TCP4 192.0.2.10\t198.51.100.1 51000 80\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 80\rX",
        ] {
            assert_eq!(parse(bad, MAX), ProxyHeader::Invalid(Invalid::BadV1), "{:?}", String::from_utf8_lossy(bad));
        }
        // No CRLF within 107 bytes.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(parse(&long, MAX), ProxyHeader::Invalid(Invalid::BadV1));
        assert_eq!(parse(&long[..106], MAX), ProxyHeader::Incomplete);
    }

    #[test]
    fn requests_without_a_header_are_not_proxy() {
        for first in
            [&b"GET /cam1 HTTP/1.0\r\n"[..], b"DESCRIBE rtsp://h/cam1 RTSP/1.0", b"\x16\x03\x01\x02\x00", b"\r\n\r\nX"]
        {
            assert_eq!(parse(first, MAX), ProxyHeader::Invalid(Invalid::NotProxy));
        }
        assert_eq!(parse(b"", MAX), ProxyHeader::Incomplete);
        assert_eq!(parse(b"PRO", MAX), ProxyHeader::Incomplete);
        assert_eq!(parse(b"\r\n\r\n\0", MAX), ProxyHeader::Incomplete);
        assert!(starts_like_header(b"PROXY TCP4") && starts_like_header(b"\r\n\r\n\0\r") && starts_like_header(b"P"));
        assert!(!starts_like_header(b"") && !starts_like_header(b"POST /") && !starts_like_header(b"GET /"));
    }

    fn any_addrs() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        let v4 = (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p)));
        let v6 = (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p)));
        prop_oneof![(v4.clone(), v4), (v6.clone(), v6)]
    }

    fn any_header() -> impl Strategy<Value = (Vec<u8>, SocketAddr, SocketAddr)> {
        let tlvs = proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..5);
        (any_addrs(), tlvs, any::<bool>()).prop_map(|((s, d), tlvs, v1)| {
            let tlvs: Vec<(u8, &[u8])> = tlvs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let bytes = if v1 { encode_v1(s, d) } else { encode_v2(s, d, &tlvs) };
            (bytes, s, d)
        })
    }

    proptest! {
        /// However the network cuts a valid header followed by anything, every prefix shorter
        /// than the header is Incomplete and every longer one gives the same addresses and length.
        #[test]
        fn any_split_of_a_valid_header(
            (header, s, d) in any_header(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut input = header.clone();
            input.extend_from_slice(&rest);
            let want = ProxyHeader::Parsed { source: s, destination: d, header_len: header.len() };
            for cut in 0..=input.len() {
                let got = parse(&input[..cut], MAX);
                if cut < header.len() {
                    prop_assert_eq!(got, ProxyHeader::Incomplete, "cut {}", cut);
                } else {
                    prop_assert_eq!(got, want, "cut {}", cut);
                }
            }
        }

        /// Any bytes: no panic, a header never claims more than the input, and the answer for a
        /// prefix is never contradicted by more bytes.
        #[test]
        fn garbage_never_panics_and_verdicts_are_stable(
            head in prop_oneof![
                Just(Vec::new()),
                Just(V2_SIGNATURE.to_vec()),
                Just(b"PROXY ".to_vec()),
                Just(b"PROXY TCP4 ".to_vec()),
            ],
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            more in proptest::collection::vec(any::<u8>(), 0..50),
            max_len in 0usize..300,
        ) {
            let mut input = head;
            input.extend_from_slice(&tail);
            let first = parse(&input, max_len);
            if let ProxyHeader::Parsed { header_len, .. } | ProxyHeader::Local { header_len } = first {
                prop_assert!(header_len <= input.len() && header_len <= max_len.clamp(V1_MAX_LEN, V2_MAX_LEN));
            }
            input.extend_from_slice(&more);
            let later = parse(&input, max_len);
            if first != ProxyHeader::Incomplete {
                prop_assert_eq!(later, first);
            }
        }
    }

    #[test]
    fn gate_takes_a_header_only_from_a_trusted_source() {
        let src: SocketAddr = "127.0.0.7:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let mut bytes = encode_v2(src, dst, &[(0x04, b"x")]);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"GET /cam HTTP/1.0\r\n\r\n");
        // Trusted: every prefix short of the header waits, then the header is skipped.
        for cut in 0..header_len {
            assert_eq!(gate(true, &bytes[..cut], 4096), Gate::NeedMore, "{cut}");
        }
        assert_eq!(gate(true, &bytes, 4096), Gate::Proceed { skip: header_len, source: Some(src) });
        let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.1 5000 80\r\nOPTIONS";
        assert_eq!(
            gate(true, v1, 4096),
            Gate::Proceed { skip: v1.len() - 7, source: Some("127.0.0.9:5000".parse().unwrap()) }
        );
        let mut local = bytes[..header_len].to_vec();
        local[12] = 0x20;
        assert_eq!(gate(true, &local, 4096), Gate::Proceed { skip: header_len, source: None });
        // A trusted balancer that sends no header is refused, not read as a request.
        assert_eq!(gate(true, b"GET /cam HTTP/1.0\r\n", 4096), Gate::Refuse(Refusal::BadHeader(Invalid::NotProxy)));
        assert_eq!(gate(true, &[0x16, 3, 1], 4096), Gate::Refuse(Refusal::BadHeader(Invalid::NotProxy)));
        // Untrusted: a header is refused once its signature is whole; anything else passes.
        assert_eq!(gate(false, &bytes, 4096), Gate::Refuse(Refusal::Untrusted));
        assert_eq!(gate(false, &bytes[..11], 4096), Gate::NeedMore);
        assert_eq!(gate(false, &bytes[..12], 4096), Gate::Refuse(Refusal::Untrusted));
        assert_eq!(gate(false, b"PROXY ", 4096), Gate::Refuse(Refusal::Untrusted));
        assert_eq!(gate(false, b"P", 4096), Gate::NeedMore);
        // No bytes yet decide nothing: a header that follows is still a header.
        assert_eq!(gate(false, b"", 4096), Gate::NeedMore);
        assert_eq!(gate(true, b"", 4096), Gate::NeedMore);
        for plain in [&b"POST /cam HTTP/1.0\r\n"[..], b"OPTIONS rtsp://x RTSP/1.0\r\n", &[0x16, 3, 1], b"PROXZ"] {
            assert_eq!(gate(false, plain, 4096), Gate::Proceed { skip: 0, source: None }, "{plain:?}");
        }
    }
}
