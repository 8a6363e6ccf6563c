//! The batched llama's attention caches, and its attention for a step of one token: the
//! step a generation takes for every token it makes. candle's ops for it (a dozen per
//! sequence and layer: views, copies, two products and a softmax, each small) cost more in
//! calls and copies than in arithmetic; here each (sequence, key/value head) reads its
//! cached keys and values once, for the query heads that share them
//! ([`murmur_matmul::attention`]), and the items run on candle's CPU thread pool. Steps of
//! several tokens (prompts) keep candle's ops.

use candle_core::Result;
use half::f16;
use half::slice::HalfFloatSliceExt;
use murmur_matmul::attention::{self, CachedHead, Softmax};

/// One layer's keys and values of one sequence, position after position: each position
/// holds kv heads × head dim values, `[position][kv head][dim]`, the row layout the key and
/// value projections produce. A step appends its positions, dropping what followed them.
/// Stored as f16, as llama.cpp's default cache is: a one-token step reads the whole cache
/// (at 400 positions and four sequences, 74 MB a pass as f32), and half the bytes is what
/// bounds it.
#[derive(Default)]
pub(super) struct LayerCache {
    keys: Vec<f16>,
    values: Vec<f16>,
}

impl LayerCache {
    /// Positions cached.
    pub(super) fn len(&self, kv_width: usize) -> usize {
        self.keys.len() / kv_width
    }

    /// Writes `keys` and `values` (whole positions of `kv_width` values each) from
    /// `position` on, dropping what followed it. The room grows by doubling, up to `limit`
    /// positions (the model's context) where the step fits under it.
    pub(super) fn write(
        &mut self,
        position: usize,
        keys: &[f32],
        values: &[f32],
        kv_width: usize,
        limit: usize,
    ) -> Result<()> {
        let cached = self.len(kv_width);
        if position > cached {
            candle_core::bail!("position {position} is past the {cached} cached");
        }
        if keys.len() != values.len() || !keys.len().is_multiple_of(kv_width) {
            candle_core::bail!(
                "{} keys and {} values are not whole positions of {kv_width}",
                keys.len(),
                values.len()
            );
        }
        let needed = position * kv_width + keys.len();
        for (cache, new) in [(&mut self.keys, keys), (&mut self.values, values)] {
            cache.truncate(position * kv_width);
            if needed > cache.capacity() {
                let grown = (2 * cache.capacity())
                    .max(64 * kv_width)
                    .min(limit * kv_width)
                    .max(needed);
                cache.reserve_exact(grown - cache.len());
            }
            let start = cache.len();
            cache.resize(start + new.len(), f16::ZERO);
            cache[start..].convert_from_f32_slice(new);
        }
        Ok(())
    }

    /// The cached keys.
    pub(super) fn keys(&self) -> &[f16] {
        &self.keys
    }

    /// The cached values.
    pub(super) fn values(&self) -> &[f16] {
        &self.values
    }
}

/// The shape of a model's attention.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    /// Query heads.
    pub(super) heads: usize,
    /// Key/value heads; each serves `heads / kv_heads` query heads.
    pub(super) kv_heads: usize,
    /// Values per head.
    pub(super) head_dim: usize,
}

/// One token's step: its query (every head, rotated), the cache it attends over (its own
/// position included) and the row of the output it fills.
pub(super) struct Step<'a> {
    pub(super) query: &'a [f32],
    pub(super) cache: &'a LayerCache,
    pub(super) row: usize,
}

impl<'a> Step<'a> {
    /// Key/value head `kv`'s rows of this step's cache.
    fn cached(&self, kv: usize, stride: usize, head_dim: usize) -> CachedHead<'a> {
        CachedHead {
            keys: self.cache.keys(),
            values: self.cache.values(),
            stride,
            offset: kv * head_dim,
        }
    }
}

impl Heads {
    /// Each step's attention, into its row of `out` (rows × heads × head dim): for each
    /// query head, softmax(q·kᵀ / √head dim) over every cached position, times the values.
    pub(super) fn attend(&self, steps: &[Step<'_>], out: &mut [f32]) {
        let Heads {
            kv_heads, head_dim, ..
        } = *self;
        let stride = kv_heads * head_dim;
        let parts = parts(
            steps.len() * kv_heads,
            candle_core::utils::get_num_threads(),
            steps.iter().map(|s| s.cache.len(stride)).min().unwrap_or(0),
        );
        self.attend_in_parts(steps, out, parts);
    }

    /// [`Heads::attend`] with each (step, key/value head) split into `parts` runs of
    /// positions.
    fn attend_in_parts<'a>(&self, steps: &[Step<'a>], out: &mut [f32], parts: usize) {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = *self;
        let repeat = heads / kv_heads;
        let group = repeat * head_dim;
        let stride = kv_heads * head_dim;
        let cached = |step: &Step<'a>, kv: usize| step.cached(kv, stride, head_dim);
        let query = |step: &Step<'a>, kv: usize| &step.query[kv * group..][..group];
        let pool = candle_core::utils::barrier_pool();
        if parts <= 1 {
            // One output cell per (row, key/value head), each locked by the one item writing it.
            let cells: Vec<parking_lot::Mutex<&mut [f32]>> =
                out.chunks_mut(group).map(parking_lot::Mutex::new).collect();
            pool.execute_chunked(steps.len() * kv_heads, |items| {
                let mut scores = Vec::new();
                for item in items {
                    let (step, kv) = (&steps[item / kv_heads], item % kv_heads);
                    let mut cell = cells[step.row * kv_heads + kv].lock();
                    attention::attend(
                        query(step, kv),
                        cached(step, kv),
                        head_dim,
                        &mut scores,
                        &mut cell,
                    );
                }
            });
            return;
        }
        // Too few (step, key/value head) items to keep every thread busy: each is split into
        // `parts` runs of positions, whose softmaxes are merged here once all are done.
        let items = steps.len() * kv_heads * parts;
        let partials: Vec<parking_lot::Mutex<(Vec<f32>, Vec<Softmax>)>> = (0..items)
            .map(|_| parking_lot::Mutex::new((vec![0.0; group], vec![Softmax::EMPTY; repeat])))
            .collect();
        pool.execute_chunked(items, |items| {
            let mut scores = Vec::new();
            for item in items {
                let (step, kv, part) = (
                    &steps[item / (kv_heads * parts)],
                    item / parts % kv_heads,
                    item % parts,
                );
                let whole = cached(step, kv);
                let positions = whole.positions();
                let run =
                    (part * positions / parts) * stride..((part + 1) * positions / parts) * stride;
                let head = CachedHead {
                    keys: &whole.keys[run.clone()],
                    values: &whole.values[run],
                    ..whole
                };
                let mut partial = partials[item].lock();
                let (out, softmax) = &mut *partial;
                attention::attend_part(query(step, kv), head, head_dim, &mut scores, out, softmax);
            }
        });
        let mut partials = partials.into_iter().map(parking_lot::Mutex::into_inner);
        for step in steps {
            for kv in 0..kv_heads {
                let (mut merged, mut softmax) = partials.next().expect("a part per item");
                for _ in 1..parts {
                    let (out, theirs) = partials.next().expect("a part per item");
                    attention::merge_parts(&mut merged, &mut softmax, &out, &theirs, head_dim);
                }
                attention::finish_parts(&mut merged, &softmax, head_dim);
                out[(step.row * kv_heads + kv) * group..][..group].copy_from_slice(&merged);
            }
        }
    }
}

/// Into how many runs of positions each of `items` (step, key/value head) pairs is split so
/// that `threads` have at least two items each, keeping each run at least
/// [`MIN_PART_POSITIONS`] long (`positions`: the shortest cache among the steps).
fn parts(items: usize, threads: usize, positions: usize) -> usize {
    let wanted = (2 * threads).div_ceil(items.max(1));
    wanted.min(positions / MIN_PART_POSITIONS).max(1)
}

/// The fewest positions a split-off run holds, so that each run is worth an item of the
/// pool and a merge (a chosen figure: the A/B in docs/benchmarks.md measured 600 and 1,024
/// tokens, not other thresholds).
const MIN_PART_POSITIONS: usize = 64;

/// llama's rotation of interleaved pairs, as candle's `rope_i` computes it for one
/// position: each head's pair `(x₀, x₁)` becomes `(x₀ cos − x₁ sin, x₀ sin + x₁ cos)`.
pub(super) fn rotate(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, (cos, sin)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0 * cos - x1 * sin;
            pair[1] = x0 * sin + x1 * cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The same attention in candle's ops, as the batched llama computes it for prompts.
    fn candle_attention(heads: Heads, query: &[f32], cache: &LayerCache) -> Vec<f32> {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = heads;
        let device = &Device::Cpu;
        let positions = cache.len(kv_heads * head_dim);
        let repeat = heads / kv_heads;
        let q = Tensor::from_slice(query, (1, kv_heads, repeat, head_dim), device).expect("candle");
        let layout = |v: &[f16]| {
            Tensor::from_slice(v, (1, positions, kv_heads, head_dim), device)
                .expect("candle")
                .to_dtype(candle_core::DType::F32)
                .expect("candle")
                .transpose(1, 2)
                .expect("candle")
                .contiguous()
                .expect("candle")
        };
        let (k, v) = (layout(cache.keys()), layout(cache.values()));
        let scores = (q.matmul(&k.t().expect("candle")).expect("candle")
            / (head_dim as f64).sqrt())
        .expect("candle");
        let weights = candle_nn::ops::softmax_last_dim(&scores).expect("candle");
        weights
            .matmul(&v)
            .expect("candle")
            .flatten_all()
            .expect("candle")
            .to_vec1()
            .expect("candle")
    }

    #[test]
    fn one_token_steps_attend_as_candles_ops_do() {
        // SmolLM2's shape: 9 query heads over 3 key/value heads of 64.
        let shape = Heads {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let kv_width = 3 * 64;
        let width = 9 * 64;
        let mut caches = Vec::new();
        for (seed, positions) in [(1, 1), (2, 7), (3, 200)] {
            let mut cache = LayerCache::default();
            let keys = values(positions * kv_width, seed);
            let vals = values(positions * kv_width, seed + 100);
            cache
                .write(0, &keys, &vals, kv_width, 2048)
                .expect("written");
            caches.push(cache);
        }
        let queries: Vec<Vec<f32>> = (0..3).map(|i| values(width, 50 + i)).collect();
        let steps: Vec<Step<'_>> = caches
            .iter()
            .zip(&queries)
            .enumerate()
            .map(|(row, (cache, query))| Step { query, cache, row })
            .collect();
        let mut out = vec![f32::NAN; 3 * width];
        shape.attend(&steps, &mut out);
        for (row, (cache, query)) in caches.iter().zip(&queries).enumerate() {
            let expected = candle_attention(shape, query, cache);
            for (got, want) in out[row * width..][..width].iter().zip(&expected) {
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "row {row}: {got} against candle's {want}"
                );
            }
        }
    }

    #[test]
    fn a_step_split_into_runs_of_positions_attends_as_candles_ops_do() {
        let shape = Heads {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let (kv_width, width) = (3 * 64, 9 * 64);
        let mut cache = LayerCache::default();
        let positions = 300;
        cache
            .write(
                0,
                &values(positions * kv_width, 4),
                &values(positions * kv_width, 104),
                kv_width,
                2048,
            )
            .expect("written");
        let query = values(width, 54);
        let expected = candle_attention(shape, &query, &cache);
        for parts in [1, 2, 3, 7] {
            let step = Step {
                query: &query,
                cache: &cache,
                row: 0,
            };
            let mut out = vec![f32::NAN; width];
            shape.attend_in_parts(&[step], &mut out, parts);
            for (got, want) in out.iter().zip(&expected) {
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{parts} parts: {got} against candle's {want}"
                );
            }
        }
    }

    #[test]
    fn steps_are_split_only_where_threads_would_wait_and_runs_stay_long() {
        // One generation on two threads: its three heads split in two.
        assert_eq!(parts(3, 2, 400), 2);
        // Four generations: twelve items keep two threads busy.
        assert_eq!(parts(12, 2, 400), 1);
        // A short cache is not split below 64 positions a run.
        assert_eq!(parts(3, 2, 100), 1);
        assert_eq!(parts(3, 8, 200), 3);
        assert_eq!(parts(3, 2, 0), 1);
    }

    #[test]
    fn a_write_drops_what_followed_its_position_and_refuses_a_gap() {
        let mut cache = LayerCache::default();
        cache.write(0, &[1.0; 6], &[2.0; 6], 2, 8).expect("candle");
        assert_eq!(cache.len(2), 3);
        cache.write(1, &[3.0; 2], &[4.0; 2], 2, 8).expect("candle");
        let f16s = |v: [f32; 4]| v.map(f16::from_f32);
        assert_eq!(cache.keys(), &f16s([1.0, 1.0, 3.0, 3.0]));
        assert_eq!(cache.values(), &f16s([2.0, 2.0, 4.0, 4.0]));
        let gap = cache
            .write(5, &[0.0; 2], &[0.0; 2], 2, 8)
            .expect_err("refused");
        assert!(gap.to_string().contains("past the 2 cached"), "{gap}");
        assert!(cache.write(2, &[0.0; 3], &[0.0; 3], 2, 8).is_err());
    }

    #[test]
    fn rotation_matches_candles_rope_i() {
        let device = &Device::Cpu;
        let (heads, head_dim) = (3, 8);
        let x = values(heads * head_dim, 7);
        let cos = values(head_dim / 2, 8);
        let sin = values(head_dim / 2, 9);
        let expected: Vec<f32> = candle_nn::rotary_emb::rope_i(
            &Tensor::from_slice(&x, (1, heads, 1, head_dim), device).expect("candle"),
            &Tensor::from_slice(&cos, (1, head_dim / 2), device).expect("candle"),
            &Tensor::from_slice(&sin, (1, head_dim / 2), device).expect("candle"),
        )
        .expect("candle")
        .flatten_all()
        .expect("candle")
        .to_vec1()
        .expect("candle");
        let mut rotated = x.clone();
        rotate(&mut rotated, head_dim, &cos, &sin);
        assert_eq!(rotated, expected, "bit for bit");
    }
}
