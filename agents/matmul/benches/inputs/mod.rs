//! The benches' inputs: the same deterministic values in every run.

/// `count` values in [0, 1) from a linear congruential sequence started at `seed`.
pub fn unit_interval(count: usize, seed: u64) -> impl Iterator<Item = f32> {
    let mut state = seed;
    (0..count).map(move |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    })
}
