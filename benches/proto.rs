//! Throughput of the protocol core's hot pieces, in bytes per second.

use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rtsp_tunnel_relay::proto::base64_stream::Base64StreamDecoder;
use rtsp_tunnel_relay::proto::interleaved::{Demux, Event};
use rtsp_tunnel_relay::proto::rewrite::{UrlMap, rewrite_to_client};
use rtsp_tunnel_relay::proto::rtsp::{MessageLimits, parse_message};

const DESCRIBE: &[u8] = include_bytes!("../fixtures/cameras/hikvision_describe.txt");

fn base64_stream(c: &mut Criterion) {
    // A POST body as clients send it: each command encoded on its own, padded.
    let cmds = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER"];
    let body: String = (0..200)
        .map(|i| {
            let m =
                format!("{} rtsp://relay:8080/cam1 RTSP/1.0\r\nCSeq: {i}\r\nUser-Agent: bench\r\n\r\n", cmds[i % 5]);
            base64::engine::general_purpose::STANDARD.encode(m)
        })
        .collect();
    let mut g = c.benchmark_group("base64_stream");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_post_body", |b| {
        let mut out = Vec::with_capacity(body.len());
        b.iter(|| {
            out.clear();
            let mut d = Base64StreamDecoder::new();
            for chunk in body.as_bytes().chunks(1460) {
                d.decode(chunk, &mut out).unwrap();
            }
        })
    });
    g.finish();
}

fn rtsp_parse_rewrite(c: &mut Criterion) {
    let limits = MessageLimits::default();
    let map = UrlMap::new("rtsp://relay:8080/cam1", "rtsp://192.168.5.106:554/Streaming/Channels/101").unwrap();
    let mut g = c.benchmark_group("rtsp");
    g.throughput(Throughput::Bytes(DESCRIBE.len() as u64));
    g.bench_function("parse_rewrite_serialise_describe", |b| {
        b.iter(|| {
            let (mut m, _) = parse_message(DESCRIBE, &limits).unwrap().unwrap();
            rewrite_to_client(&mut m, &map);
            m.to_bytes()
        })
    });
    g.finish();
}

fn demux(c: &mut Criterion) {
    // Camera traffic: 1400-byte RTP frames with an RTCP report now and then, read 16 KiB at a time.
    let mut stream = Vec::new();
    for i in 0..2000 {
        let (ch, len) = if i % 100 == 99 { (1u8, 52usize) } else { (0, 1400) };
        stream.extend_from_slice(&[b'$', ch]);
        stream.extend_from_slice(&(len as u16).to_be_bytes());
        stream.resize(stream.len() + len, 0x5a);
    }
    let mut g = c.benchmark_group("interleaved");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("demux_media_16k_reads", |b| {
        let mut ev: Vec<Event> = Vec::new();
        b.iter(|| {
            let mut d = Demux::new(MessageLimits::default());
            let mut frames = 0;
            for chunk in stream.chunks(16 * 1024) {
                ev.clear();
                d.feed(chunk, &mut ev).unwrap();
                frames += ev.len();
            }
            frames
        })
    });
    g.finish();
}

criterion_group!(benches, base64_stream, rtsp_parse_rewrite, demux);
criterion_main!(benches);
