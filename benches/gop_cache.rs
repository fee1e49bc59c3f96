//! The GOP cache's per-packet cost as the relay pays it with many shared cameras: 200 caches
//! fed round-robin, so each packet lands in memory last touched a group of pictures ago (200 ×
//! ~240 KB do not stay in a core's own caches), as in `loadtest/compare.sh`'s shared step.
//! `cargo bench --bench gop_cache -- --warm-up-time 1 --measurement-time 5`; the time per
//! iteration is for one packet into each of the 200 caches (divide by 200 for one packet).
//! `join_a_full_group` is the other side: a joiner taking a whole group of pictures.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rtsp_tunnel_relay::proto::gop_cache::{GopCache, GopLimits};
use rtsp_tunnel_relay::proto::keyframe::{Classifier, VideoCodec, VideoPacket};

/// The relay's allocator: blocks are allocated and freed as the relay does it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CAMERAS: usize = 200;
/// 1,200-byte RTP packets, ~4 per frame, a keyframe every 50 frames (2 s at 25 fps, ~1 Mbit/s).
const PACKET: usize = 1200;
const PACKETS_PER_FRAME: usize = 4;
const FRAMES_PER_GOP: usize = 50;
const GOP_PACKETS: usize = PACKETS_PER_FRAME * FRAMES_PER_GOP;

/// One group of pictures as FU-A fragments: the packet and how the cache's caller reads it.
fn gop() -> Vec<(Vec<u8>, VideoPacket)> {
    let classifier = Classifier::new(VideoCodec::H264);
    (0..GOP_PACKETS)
        .map(|i| {
            let (frame, part) = (i / PACKETS_PER_FRAME, i % PACKETS_PER_FRAME);
            let nal_type = if frame == 0 { 5 } else { 1 };
            let start = if part == 0 { 0x80 } else { 0 };
            let end = if part == PACKETS_PER_FRAME - 1 { 0x40 } else { 0 };
            let ts = (frame as u32) * 3600;
            let mut p = vec![0x80, 96 | if end != 0 { 0x80 } else { 0 }];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend_from_slice(&[0x7c, start | end | nal_type]);
            p.resize(PACKET, 0x5a);
            let v = classifier.classify(&p).expect("an RTP packet");
            (p, v)
        })
        .collect()
}

/// One packet into each cache, each camera at its own place in its stream.
fn round(caches: &mut [GopCache], positions: &mut [usize], gop: &[(Vec<u8>, VideoPacket)]) {
    for (cache, pos) in caches.iter_mut().zip(positions.iter_mut()) {
        let (p, v) = &gop[*pos % GOP_PACKETS];
        // Later groups carry later timestamps (a new access unit every frame).
        let gops = (*pos / GOP_PACKETS) as u32;
        let v = VideoPacket { timestamp: v.timestamp.wrapping_add(gops.wrapping_mul(180_000)), ..*v };
        cache.push_video(0, 0, p, &v);
        *pos += 1;
    }
}

fn push_round_robin(c: &mut Criterion) {
    let gop = gop();
    let limits = GopLimits { bytes: 4 << 20, packets: 8192 };
    let mut caches: Vec<GopCache> = (0..CAMERAS).map(|_| GopCache::new(limits)).collect();
    // Each camera at its own place in its group of pictures, as real cameras are.
    let mut positions: Vec<usize> = (0..CAMERAS).map(|i| i * 37 % GOP_PACKETS).collect();
    // Measured from the steady state: every cache holds a group of pictures.
    for _ in 0..GOP_PACKETS {
        round(&mut caches, &mut positions, &gop);
    }
    assert!(caches.iter().all(GopCache::is_ready));
    let mut g = c.benchmark_group("gop_cache");
    g.throughput(Throughput::Elements(CAMERAS as u64));
    g.bench_function("push_200_cameras_round_robin", |b| b.iter(|| round(&mut caches, &mut positions, &gop)));
    g.finish();
}

/// What a join costs: a viewer takes a whole group of pictures (200 packets) from a cache no
/// one joined before (the cache shares its bytes only when asked, so this is the dearest join).
fn join_a_full_group(c: &mut Criterion) {
    let gop = gop();
    let limits = GopLimits { bytes: 4 << 20, packets: 8192 };
    let full = || {
        let mut cache = GopCache::new(limits);
        for (p, v) in &gop {
            cache.push_video(0, 0, p, v);
        }
        cache
    };
    let mut g = c.benchmark_group("gop_cache");
    g.bench_function("join_a_full_group", |b| {
        b.iter_batched(
            full,
            |cache| {
                let frames = cache.snapshot();
                (cache, frames)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, push_round_robin, join_a_full_group);
criterion_main!(benches);
