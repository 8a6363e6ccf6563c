//! One token's attention over an f16 key/value cache: for the query heads that share a
//! key/value head, softmax(q·kᵀ / √head dim) over every cached position, times the values.
//!
//! A generation step reads the whole cache once per layer; at 800 positions the plain loop
//! (now [`attend_portable`]) took a third of a step. Converting the cache a row at a time
//! through `half` costs a call per eight values, and libm's `expf` a call per score; here,
//! with AVX2, FMA and F16C, each row is widened in registers and meets every query head that
//! reads it while there, the exponents are taken eight at a time, and the rows a few
//! positions ahead are asked of memory while the current ones are summed.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// One key/value head's cached rows: position `p`'s keys at
/// `keys[p * stride + offset..][..head_dim]`, its values likewise in `values`.
#[derive(Clone, Copy, Debug)]
pub struct CachedHead<'a> {
    /// Cached keys, position after position.
    pub keys: &'a [f16],
    /// Cached values, laid out as the keys.
    pub values: &'a [f16],
    /// Values from one position to the next (every key/value head's row).
    pub stride: usize,
    /// Where this head's row starts within a position.
    pub offset: usize,
}

impl CachedHead<'_> {
    /// Positions cached.
    pub fn positions(&self) -> usize {
        self.keys.len() / self.stride.max(1)
    }
}

/// Where one query head's softmax stands over some of the positions: the largest score among
/// them and the sum of every score's exponent measured from it. A part's output
/// ([`attend_part`]) holds the values weighted by those exponents, not yet divided by the
/// sum, so that parts over disjoint positions merge ([`merge_parts`]) into the attention over
/// all of them ([`finish_parts`]): one head's positions can be split across threads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softmax {
    /// The largest score (−∞ over no position).
    pub max: f32,
    /// Σ exp(score − max).
    pub sum: f32,
}

impl Softmax {
    /// Over no position.
    pub const EMPTY: Self = Self {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };
}

/// Attends `query` (query heads × `head_dim`, rotated) over `head`, into `out` (the same
/// shape); `scores` is scratch, kept by the caller across calls. With no position cached,
/// `out` is zeros.
///
/// # Panics
/// If `query` and `out` differ in length or are not whole heads, if the head's row does not
/// fit in a position (`offset + head_dim > stride`), or if keys and values differ in length.
pub fn attend(
    query: &[f32],
    head: CachedHead<'_>,
    head_dim: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    whole(Path::Fastest, query, head, head_dim, scores, out);
}

/// [`attend`] without the division by each head's sum: `out` gets each query head's values
/// weighted by its scores' exponents, `softmax` (one per query head) the largest score and
/// the sum. Over no position, `out` is zeros and each head [`Softmax::EMPTY`].
///
/// # Panics
/// As [`attend`]'s, or if `softmax` is not one per query head.
pub fn attend_part(
    query: &[f32],
    head: CachedHead<'_>,
    head_dim: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
    softmax: &mut [Softmax],
) {
    let heads = Heads::new(query, head_dim, scores, out, softmax);
    dispatch(
        head,
        Heads {
            normalize: false,
            ..heads
        },
        Path::Fastest,
    );
}

/// `out` and `softmax` (a part over some positions, as [`attend_part`] gives it) merged with
/// `other` (a part over others): each head's weighted values rescaled to the larger of the
/// two maximums and added, and likewise its sum.
pub fn merge_parts(
    out: &mut [f32],
    softmax: &mut [Softmax],
    other_out: &[f32],
    other: &[Softmax],
    head_dim: usize,
) {
    let heads = out
        .chunks_exact_mut(head_dim)
        .zip(softmax.iter_mut())
        .zip(other_out.chunks_exact(head_dim).zip(other));
    for ((out, mine), (other_out, theirs)) in heads {
        let max = mine.max.max(theirs.max);
        if max == f32::NEG_INFINITY {
            continue;
        }
        let (a, b) = ((mine.max - max).exp(), (theirs.max - max).exp());
        for (o, other) in out.iter_mut().zip(other_out) {
            *o = *o * a + other * b;
        }
        *mine = Softmax {
            max,
            sum: mine.sum * a + theirs.sum * b,
        };
    }
}

/// Each head's weighted values divided by its sum: the attention over every position the
/// merged parts covered (zeros for a head over none).
pub fn finish_parts(out: &mut [f32], softmax: &[Softmax], head_dim: usize) {
    for (out, softmax) in out.chunks_exact_mut(head_dim).zip(softmax) {
        if softmax.sum > 0.0 {
            let inverse = 1.0 / softmax.sum;
            out.iter_mut().for_each(|o| *o *= inverse);
        } else {
            out.fill(0.0);
        }
    }
}

/// [`attend`] (`normalize`) or [`attend_part`] on the fastest path this CPU runs.
fn dispatch(head: CachedHead<'_>, heads: Heads<'_>, path: Path) {
    let (query, head_dim) = (heads.query, heads.head_dim);
    assert!(
        head_dim > 0 && query.len() == heads.out.len() && query.len().is_multiple_of(head_dim),
        "{} query values and {} outputs are not whole heads of {head_dim}",
        query.len(),
        heads.out.len()
    );
    assert!(
        head.offset + head_dim <= head.stride && head.keys.len() == head.values.len(),
        "a head of {head_dim} at {} in positions of {}; {} keys, {} values",
        head.offset,
        head.stride,
        head.keys.len(),
        head.values.len()
    );
    assert_eq!(
        heads.softmax.len(),
        query.len() / head_dim,
        "one softmax per query head"
    );
    if head.positions() == 0 {
        heads.out.fill(0.0);
        heads.softmax.fill(Softmax::EMPTY);
        return;
    }
    // Only x86-64 has a faster path to choose.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = path;
    #[cfg(target_arch = "x86_64")]
    if path == Path::Fastest
        && head_dim.is_multiple_of(16)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has AVX2, FMA and F16C, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            x86::attend(head, heads)
        };
        return;
    }
    portable(head, heads);
}

/// Which code attends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The SIMD path where the CPU and the head's size allow it, else the portable one.
    Fastest,
    /// The portable path, whatever the CPU.
    Portable,
}

/// The query heads of one call that share a key/value head, and where their results go.
struct Heads<'a> {
    /// Whole heads of `head_dim` values each.
    query: &'a [f32],
    head_dim: usize,
    /// Room for each query head's scores (reused between calls).
    scores: &'a mut Vec<f32>,
    /// One row of `head_dim` per query head.
    out: &'a mut [f32],
    /// One per query head: its largest score and its sum.
    softmax: &'a mut [Softmax],
    /// Whether each head's values are divided by its sum ([`attend`]) or left weighted by
    /// its scores' exponents ([`attend_part`]).
    normalize: bool,
}

impl<'a> Heads<'a> {
    /// Heads whose values are divided by their sums.
    fn new(
        query: &'a [f32],
        head_dim: usize,
        scores: &'a mut Vec<f32>,
        out: &'a mut [f32],
        softmax: &'a mut [Softmax],
    ) -> Self {
        Self {
            query,
            head_dim,
            scores,
            out,
            softmax,
            normalize: true,
        }
    }
}

/// [`attend`] without SIMD: each cached row widened to f32 by `half`, then one dot product
/// (or one scaled sum) per query head.
pub fn attend_portable(
    query: &[f32],
    head: CachedHead<'_>,
    head_dim: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    whole(Path::Portable, query, head, head_dim, scores, out);
}

/// [`attend`] through `path`.
fn whole(
    path: Path,
    query: &[f32],
    head: CachedHead<'_>,
    head_dim: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let mut softmax = vec![Softmax::EMPTY; query.len() / head_dim.max(1)];
    dispatch(
        head,
        Heads::new(query, head_dim, scores, out, &mut softmax),
        path,
    );
}

/// The portable path over at least one position.
fn portable(head: CachedHead<'_>, heads: Heads<'_>) {
    let Heads {
        query,
        head_dim,
        scores,
        out,
        softmax,
        normalize,
    } = heads;
    let (positions, scale) = fresh_scores(query, head, head_dim, scores);
    let mut row = vec![0f32; head_dim];
    for (p, key) in head.rows(head.keys, head_dim).enumerate() {
        key.convert_to_f32_slice(&mut row);
        for (r, q) in query.chunks_exact(head_dim).enumerate() {
            scores[r * positions + p] = dot(q, &row) * scale;
        }
    }
    softmax_rows(scores, positions, softmax);
    out.fill(0.0);
    for (p, value) in head.rows(head.values, head_dim).enumerate() {
        value.convert_to_f32_slice(&mut row);
        for (r, o) in out.chunks_exact_mut(head_dim).enumerate() {
            let weight = scores[r * positions + p];
            for (o, v) in o.iter_mut().zip(row.iter()) {
                *o += weight * v;
            }
        }
    }
    if normalize {
        finish_parts(out, softmax, head_dim);
    }
}

/// `scores` made a zeroed row of every cached position for each query head; the positions,
/// and the scale of a dot product (1 / √head dim).
fn fresh_scores(
    query: &[f32],
    head: CachedHead<'_>,
    head_dim: usize,
    scores: &mut Vec<f32>,
) -> (usize, f32) {
    let positions = head.positions();
    scores.clear();
    scores.resize(query.len() / head_dim * positions, 0.0);
    (positions, 1.0 / (head_dim as f32).sqrt())
}

impl<'a> CachedHead<'a> {
    /// This head's row of `cached` (the keys or the values) at each position.
    fn rows(&self, cached: &'a [f16], head_dim: usize) -> impl Iterator<Item = &'a [f16]> {
        let offset = self.offset;
        cached
            .chunks_exact(self.stride)
            .map(move |position| &position[offset..][..head_dim])
    }
}

/// Each row of `scores` (`positions` long) replaced by the exponent of its distance from the
/// row's largest; that largest and the row's sum into `softmax`.
fn softmax_rows(scores: &mut [f32], positions: usize, softmax: &mut [Softmax]) {
    for (row, softmax) in scores.chunks_exact_mut(positions).zip(softmax) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for score in row.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        *softmax = Softmax { max, sum };
    }
}

/// `a · b`, in eight lanes the compiler keeps in vector registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (a, b) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + a_rest.iter().zip(b_rest).map(|(a, b)| a * b).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    //! [`attend`](super::attend) in AVX2 registers. Every function is compiled for AVX2, FMA
    //! and F16C and only called once the CPU was found to have them.

    use std::arch::x86_64::*;

    use half::f16;

    use super::{CachedHead, Heads, Softmax, fresh_scores};
    use crate::kernels::horizontal_sum;

    /// Query heads taken together: their sixteen-value slices (two registers each) stay in
    /// registers while a row passes, within AVX2's sixteen.
    const HEADS_AT_ONCE: usize = 4;

    /// Positions ahead of the one read whose row is asked of memory.
    const PREFETCH: usize = 8;

    /// [`super::attend`] (`normalize`) or [`super::attend_part`] for a `head_dim` that is a
    /// multiple of 16, over at least one position.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn attend(head: CachedHead<'_>, heads: Heads<'_>) {
        let Heads {
            query,
            head_dim,
            scores,
            out,
            softmax,
            normalize,
        } = heads;
        let (positions, scale) = fresh_scores(query, head, head_dim, scores);
        let repeat = query.len() / head_dim;
        let mut first = 0;
        while first < repeat {
            let count = (repeat - first).min(HEADS_AT_ONCE);
            let query = &query[first * head_dim..][..count * head_dim];
            let scores = &mut scores[first * positions..][..count * positions];
            match count {
                4 => key_scores::<4>(query, head, head_dim, scale, scores),
                3 => key_scores::<3>(query, head, head_dim, scale, scores),
                2 => key_scores::<2>(query, head, head_dim, scale, scores),
                _ => key_scores::<1>(query, head, head_dim, scale, scores),
            }
            first += count;
        }
        for (row, softmax) in scores.chunks_exact_mut(positions).zip(softmax.iter_mut()) {
            *softmax = softmax_row(row);
        }
        // What each head's weighted values are multiplied by: 1 / its sum, or 1 for a part.
        let factors: Vec<f32> = softmax
            .iter()
            .map(|s| if normalize { 1.0 / s.sum } else { 1.0 })
            .collect();
        let mut first = 0;
        while first < repeat {
            let count = (repeat - first).min(HEADS_AT_ONCE);
            let weights = &scores[first * positions..][..count * positions];
            let factors = &factors[first..][..count];
            let out = &mut out[first * head_dim..][..count * head_dim];
            match count {
                4 => weighted_values::<4>(weights, factors, head, head_dim, out),
                3 => weighted_values::<3>(weights, factors, head, head_dim, out),
                2 => weighted_values::<2>(weights, factors, head, head_dim, out),
                _ => weighted_values::<1>(weights, factors, head, head_dim, out),
            }
            first += count;
        }
    }

    /// Asks for this head's row of `cached` at position `p` (if there is one) to be brought
    /// into cache, a 64-byte line at a time. The rows are a position's width apart, and at a
    /// few hundred positions they come from memory: without the hint each row's loads wait
    /// for it (1.5× as long at 400 positions, in `cargo bench --bench attention`).
    #[inline]
    #[target_feature(enable = "sse")]
    fn prefetch(cached: &[f16], head: CachedHead<'_>, p: usize, head_dim: usize) {
        if let Some(row) = cached.get(p * head.stride + head.offset..) {
            for line in row[..head_dim.min(row.len())].chunks(32) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
    }

    /// Sixteen f16 values from `row[at..]`, as two registers of f32.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn widen16(row: &[f16], at: usize) -> [__m256; 2] {
        let row = &row[at..][..16];
        // SAFETY: `row` holds sixteen f16 (32 bytes): two unaligned 16-byte loads.
        unsafe {
            let pointer = row.as_ptr().cast::<__m128i>();
            [
                _mm256_cvtph_ps(_mm_loadu_si128(pointer)),
                _mm256_cvtph_ps(_mm_loadu_si128(pointer.add(1))),
            ]
        }
    }

    /// Eight f32 from `values[at..]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load8(values: &[f32], at: usize) -> __m256 {
        let values = &values[at..][..8];
        // SAFETY: `values` holds eight f32.
        unsafe { _mm256_loadu_ps(values.as_ptr()) }
    }

    /// `scores[r * positions + p]` = query head `r` · the key at `p`, times `scale`, for `R`
    /// query heads: each key row is widened once for all of them. The eight lanes of each
    /// dot product are summed eight positions at a time, in one register.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn key_scores<const R: usize>(
        query: &[f32],
        head: CachedHead<'_>,
        head_dim: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let positions = head.positions();
        let dots = |p: usize| -> [__m256; R] {
            let key = &head.keys[p * head.stride + head.offset..][..head_dim];
            prefetch(head.keys, head, p + PREFETCH, head_dim);
            // Two sums per head, for the two halves of each sixteen: shorter chains of FMAs.
            let mut sums = [[_mm256_setzero_ps(); 2]; R];
            for at in (0..head_dim).step_by(16) {
                let [k0, k1] = widen16(key, at);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let q = r * head_dim + at;
                    sum[0] = _mm256_fmadd_ps(load8(query, q), k0, sum[0]);
                    sum[1] = _mm256_fmadd_ps(load8(query, q + 8), k1, sum[1]);
                }
            }
            sums.map(|[low, high]| _mm256_add_ps(low, high))
        };
        let scale_lanes = _mm256_set1_ps(scale);
        let whole = positions - positions % 8;
        for first in (0..whole).step_by(8) {
            let mut lanes = [[_mm256_setzero_ps(); 8]; R];
            for (j, position) in (first..first + 8).enumerate() {
                for (r, dot) in dots(position).into_iter().enumerate() {
                    lanes[r][j] = dot;
                }
            }
            for (r, lanes) in lanes.into_iter().enumerate() {
                let cells = &mut scores[r * positions + first..][..8];
                let totals = _mm256_mul_ps(sum_each(lanes), scale_lanes);
                // SAFETY: `cells` holds eight f32.
                unsafe { _mm256_storeu_ps(cells.as_mut_ptr(), totals) };
            }
        }
        for p in whole..positions {
            for (r, dot) in dots(p).into_iter().enumerate() {
                scores[r * positions + p] = horizontal_sum(dot) * scale;
            }
        }
    }

    /// Lane `j` = the sum of the eight lanes of `x[j]`.
    #[inline]
    #[target_feature(enable = "avx")]
    fn sum_each(x: [__m256; 8]) -> __m256 {
        let pairs = [
            _mm256_hadd_ps(x[0], x[1]),
            _mm256_hadd_ps(x[2], x[3]),
            _mm256_hadd_ps(x[4], x[5]),
            _mm256_hadd_ps(x[6], x[7]),
        ];
        // Each 128-bit half: x[0..4]'s (then x[4..8]'s) sums of that half's lanes.
        let first = _mm256_hadd_ps(pairs[0], pairs[1]);
        let second = _mm256_hadd_ps(pairs[2], pairs[3]);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(first, second),
            _mm256_permute2f128_ps::<0x31>(first, second),
        )
    }

    /// `out` (R heads × head dim) = for each head, the values weighted by its row of
    /// `weights`, times its factor; sixteen columns at a time, so that every head's
    /// accumulators stay in registers over all positions.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn weighted_values<const R: usize>(
        weights: &[f32],
        factors: &[f32],
        head: CachedHead<'_>,
        head_dim: usize,
        out: &mut [f32],
    ) {
        let positions = head.positions();
        for at in (0..head_dim).step_by(16) {
            let mut totals = [[_mm256_setzero_ps(); 2]; R];
            for (p, value) in head.rows(head.values, head_dim).enumerate() {
                if at == 0 {
                    prefetch(head.values, head, p + PREFETCH, head_dim);
                }
                let [v0, v1] = widen16(value, at);
                for (r, total) in totals.iter_mut().enumerate() {
                    let weight = _mm256_set1_ps(weights[r * positions + p]);
                    total[0] = _mm256_fmadd_ps(weight, v0, total[0]);
                    total[1] = _mm256_fmadd_ps(weight, v1, total[1]);
                }
            }
            for (r, [low, high]) in totals.into_iter().enumerate() {
                let factor = _mm256_set1_ps(factors[r]);
                let cells = &mut out[r * head_dim + at..][..16];
                // SAFETY: `cells` holds sixteen f32: two unaligned stores of eight.
                unsafe {
                    _mm256_storeu_ps(cells.as_mut_ptr(), _mm256_mul_ps(low, factor));
                    _mm256_storeu_ps(cells.as_mut_ptr().add(8), _mm256_mul_ps(high, factor));
                }
            }
        }
    }

    /// `row` replaced by the exponent of each score's distance from the row's largest; that
    /// largest, and the sum of the exponents.
    #[target_feature(enable = "avx2,fma")]
    fn softmax_row(row: &mut [f32]) -> Softmax {
        let (eights, rest) = row.as_chunks_mut::<8>();
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        for eight in eights.iter() {
            max = _mm256_max_ps(max, load8(eight, 0));
        }
        let max = rest
            .iter()
            .fold(horizontal_max(max), |max, &score| max.max(score));
        let (splat, mut total) = (_mm256_set1_ps(max), _mm256_setzero_ps());
        for eight in eights.iter_mut() {
            let e = exp(_mm256_sub_ps(load8(eight, 0), splat));
            total = _mm256_add_ps(total, e);
            // SAFETY: `eight` holds eight f32.
            unsafe { _mm256_storeu_ps(eight.as_mut_ptr(), e) };
        }
        let sum = rest.iter_mut().fold(horizontal_sum(total), |sum, score| {
            *score = (*score - max).exp();
            sum + *score
        });
        Softmax { max, sum }
    }

    /// eˣ in each lane, within two units in the last place over the range softmax uses (x ≤
    /// 0): x = n ln 2 + r with |r| ≤ ln 2 / 2, eʳ by Cephes' polynomial, times 2ⁿ from the
    /// exponent bits. Below −87.3 (where eˣ leaves the normal floats) the lane is 0.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(x, _mm256_set1_ps(88.0));
        let underflow = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.3));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.3));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 in two parts, the first exact in few bits, so that n × it is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let exponent = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(exponent)), underflow)
    }

    /// The largest of eight lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn horizontal_max(x: __m256) -> f32 {
        let high = _mm256_extractf128_ps(x, 1);
        let max = _mm_max_ps(high, _mm256_castps256_ps128(x));
        let max = _mm_max_ps(max, _mm_movehl_ps(max, max));
        _mm_cvtss_f32(_mm_max_ss(max, _mm_movehdup_ps(max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::values;

    /// Softmax(q·kᵀ/√d)·v in f64 from the f16 cache, for every query head.
    fn exact(query: &[f32], head: CachedHead<'_>, head_dim: usize) -> Vec<f64> {
        let positions = head.positions();
        let row = |cached: &[f16], p: usize| -> Vec<f64> {
            cached[p * head.stride + head.offset..][..head_dim]
                .iter()
                .map(|v| f64::from(v.to_f32()))
                .collect()
        };
        let mut out = Vec::new();
        for q in query.chunks_exact(head_dim) {
            let scores: Vec<f64> = (0..positions)
                .map(|p| {
                    let k = row(head.keys, p);
                    q.iter()
                        .zip(&k)
                        .map(|(q, k)| f64::from(*q) * k)
                        .sum::<f64>()
                        / (head_dim as f64).sqrt()
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for d in 0..head_dim {
                out.push(
                    (0..positions)
                        .map(|p| weights[p] * row(head.values, p)[d])
                        .sum::<f64>()
                        / total,
                );
            }
        }
        out
    }

    /// [`attend`] as three parts over a third of the positions each (some empty where there
    /// are fewer than three), merged in turn and finished.
    fn in_parts(query: &[f32], head: CachedHead<'_>, head_dim: usize) -> Vec<f32> {
        let positions = head.positions();
        let heads = query.len() / head_dim;
        let (mut out, mut softmax) = (vec![0.0; query.len()], vec![Softmax::EMPTY; heads]);
        let mut scores = Vec::new();
        for k in 0..3 {
            let range = (k * positions / 3) * head.stride..((k + 1) * positions / 3) * head.stride;
            let part = CachedHead {
                keys: &head.keys[range.clone()],
                values: &head.values[range],
                ..head
            };
            let (mut part_out, mut part_softmax) =
                (vec![f32::NAN; query.len()], vec![Softmax::EMPTY; heads]);
            attend_part(
                query,
                part,
                head_dim,
                &mut scores,
                &mut part_out,
                &mut part_softmax,
            );
            merge_parts(&mut out, &mut softmax, &part_out, &part_softmax, head_dim);
        }
        finish_parts(&mut out, &softmax, head_dim);
        out
    }

    #[test]
    fn every_path_attends_as_the_exact_sum_does() {
        // Shapes: SmolLM2's (3 query heads per key/value head of 64, 3 such heads a
        // position), one head each (1 × 128), a group of 7 (two register tiles: 4 and 3), and
        // a head of 40, which only the portable path takes.
        for (repeat, kv_heads, head_dim) in [(3, 3, 64), (1, 2, 128), (7, 1, 32), (2, 2, 40)] {
            for positions in [0, 1, 2, 17, 300] {
                let stride = kv_heads * head_dim;
                let to_f16 = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
                // Scaled as a model's are: scores of a few units, some positions dominant.
                let keys = to_f16(values(positions * stride, positions as u64, 4.0));
                let vals = to_f16(values(positions * stride, 1000 + positions as u64, 1.0));
                for kv in 0..kv_heads {
                    let head = CachedHead {
                        keys: &keys,
                        values: &vals,
                        stride,
                        offset: kv * head_dim,
                    };
                    let query = values(repeat * head_dim, 7 + kv as u64, 1.0);
                    let want = if positions == 0 {
                        vec![0.0; query.len()]
                    } else {
                        exact(&query, head, head_dim)
                    };
                    let mut scores = Vec::new();
                    let mut got = vec![f32::NAN; query.len()];
                    let mut portable = vec![f32::NAN; query.len()];
                    attend(&query, head, head_dim, &mut scores, &mut got);
                    attend_portable(&query, head, head_dim, &mut scores, &mut portable);
                    let merged = in_parts(&query, head, head_dim);
                    for (i, want) in want.iter().enumerate() {
                        let paths = [
                            ("dispatched", got[i]),
                            ("portable", portable[i]),
                            ("three parts merged", merged[i]),
                        ];
                        for (path, got) in paths {
                            assert!(
                                (f64::from(got) - want).abs() <= 1e-5 * want.abs().max(1.0),
                                "{path}, {repeat}×{head_dim}, {positions} positions, \
                                 kv head {kv}, value {i}: {got} against {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "are not whole heads of 64")]
    fn a_query_that_is_not_whole_heads_is_refused() {
        let cache = vec![f16::ZERO; 64];
        let head = CachedHead {
            keys: &cache,
            values: &cache,
            stride: 64,
            offset: 0,
        };
        attend(&[0.0; 65], head, 64, &mut Vec::new(), &mut [0.0; 65]);
    }
}
