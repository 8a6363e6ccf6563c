//! One token's attention over an f16 cache on SmolLM2-135M's shape (9 query heads over 3
//! key/value heads of 64, 30 layers, each layer's cache its own memory), on one thread: the
//! dispatched path against the portable one in the same run. `cargo bench -p murmur-matmul
//! --bench attention`. Prints time per token (all layers) and the cache bytes read per second.

use half::f16;
use murmur_matmul::attention::{self, CachedHead};

mod inputs;
mod median_time;
use median_time::time;

const LAYERS: usize = 30;
const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;

fn values(count: usize, seed: u64) -> Vec<f16> {
    inputs::unit_interval(count, seed)
        .map(|u| f16::from_f32(u * 4.0 - 2.0))
        .collect()
}

type Attend = fn(&[f32], CachedHead<'_>, usize, &mut Vec<f32>, &mut [f32]);

fn main() {
    let stride = KV_HEADS * HEAD_DIM;
    let repeat = HEADS / KV_HEADS;
    let query: Vec<f32> = values(HEADS * HEAD_DIM, 7)
        .iter()
        .map(|v| v.to_f32())
        .collect();
    println!("one token, {LAYERS} layers × {KV_HEADS} key/value heads, one thread; medians");
    println!("| positions | cache read | portable | dispatched | speedup | GB/s dispatched |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for positions in [64, 400, 1000] {
        let caches: Vec<(Vec<f16>, Vec<f16>)> = (0..LAYERS)
            .map(|layer| {
                let seed = 2 * layer as u64;
                (
                    values(positions * stride, seed),
                    values(positions * stride, seed + 1),
                )
            })
            .collect();
        let mut scores = Vec::new();
        let mut out = vec![0f32; HEADS * HEAD_DIM];
        let mut run = |attend: Attend| {
            time(|| {
                for (keys, values) in &caches {
                    for kv in 0..KV_HEADS {
                        let head = CachedHead {
                            keys,
                            values,
                            stride,
                            offset: kv * HEAD_DIM,
                        };
                        let range = kv * repeat * HEAD_DIM..(kv + 1) * repeat * HEAD_DIM;
                        attend(
                            &query[range.clone()],
                            head,
                            HEAD_DIM,
                            &mut scores,
                            &mut out[range],
                        );
                    }
                }
            })
        };
        let portable = run(attention::attend_portable);
        let dispatched = run(attention::attend);
        let bytes = (LAYERS * positions * stride * 2 * size_of::<f16>()) as f64;
        println!(
            "| {positions} | {:.1} MB | {:.0} µs | {:.0} µs | {:.2}× | {:.1} |",
            bytes / 1e6,
            portable.as_secs_f64() * 1e6,
            dispatched.as_secs_f64() * 1e6,
            portable.as_secs_f64() / dispatched.as_secs_f64(),
            bytes / dispatched.as_secs_f64() / 1e9
        );
    }
}
