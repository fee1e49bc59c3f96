//! The PROXY protocol header parser: never panics; a header it accepts lies within the input and
//! the limit; a verdict is never contradicted by more bytes, nor by the same bytes cut anywhere.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::proxy_header::{ProxyHeader, V1_MAX_LEN, V2_MAX_LEN, parse};

fuzz_target!(|data: &[u8]| {
    // First byte: the limit in 256-byte steps, so both tiny and generous limits are explored.
    let Some((&limit, data)) = data.split_first() else { return };
    let max_len = usize::from(limit) * 256;
    let verdict = parse(data, max_len);
    if let ProxyHeader::Parsed { header_len, .. } | ProxyHeader::Local { header_len } = verdict {
        assert!(header_len <= data.len() && header_len <= max_len.clamp(V1_MAX_LEN, V2_MAX_LEN));
        // The bytes after the header do not matter; the ones before it are not enough.
        assert_eq!(parse(&data[..header_len], max_len), verdict);
        assert_eq!(parse(&data[..header_len - 1], max_len), ProxyHeader::Incomplete);
    }
    if verdict != ProxyHeader::Incomplete {
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(parse(&more, max_len), verdict);
    }
});
