//! How long a call takes, as both benches measure it.

use std::time::{Duration, Instant};

/// The median time of one call of `f`: ten batches, each of as many calls as filled 30 ms
/// once `f` had run once.
pub fn time(mut f: impl FnMut()) -> Duration {
    f();
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_millis(30) {
        f();
        calls += 1;
    }
    let per_batch = calls.max(1);
    let mut samples: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            started.elapsed() / per_batch
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}
