//! The pairing table under contention: every tunnel registers a GET, looks up a POST and
//! removes itself, from several threads at once (as shards do).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rtsp_tunnel_relay::pairing::{CookieTable, SessionRef};

fn pair_cycle(table: &CookieTable, shard: u16, n: u64) {
    for i in 0..n {
        let cookie = format!("{shard:02}-{i:016x}");
        let me = SessionRef { shard, key: i };
        table.register_get(&cookie, me);
        let _ = table.post_arrived(&cookie, shard ^ 1);
        table.remove_get(&cookie, me);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cookie_table");
    const PER_THREAD: u64 = 2_000;
    for threads in [1u16, 2, 4] {
        g.throughput(Throughput::Elements(PER_THREAD * threads as u64));
        g.bench_function(format!("register_lookup_remove/{threads}_threads"), |b| {
            let table = Arc::new(CookieTable::new());
            b.iter(|| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let table = table.clone();
                        std::thread::spawn(move || pair_cycle(&table, t, PER_THREAD))
                    })
                    .collect();
                hs.into_iter().for_each(|h| h.join().unwrap());
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
