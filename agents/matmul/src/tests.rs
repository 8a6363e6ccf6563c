//! Every kernel against candle's `QMatMul`, bit for bit: Q8_0 on shapes that take candle's
//! per-row path (inputs not a multiple of 256), Q4_1 (candle's scalar loop) on any, and
//! both near the exact product of the quantized values. Each tile shape and the column tail.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use half::f16;

use super::{Activations, Kernel, QuantizedMatrix};

/// Deterministic values in [-scale, scale] (a linear congruential sequence).
pub(crate) fn values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn quantized(rows: usize, depth: usize, seed: u64) -> QTensor {
    quantized_as(rows, depth, seed, GgmlDType::Q8_0)
}

fn quantized_as(rows: usize, depth: usize, seed: u64, dtype: GgmlDType) -> QTensor {
    let weights = Tensor::from_vec(values(rows * depth, seed, 0.5), (rows, depth), &Device::Cpu)
        .expect("weights");
    QTensor::quantize(&weights, dtype).expect("quantizes")
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn every_kernel_gives_candles_bits() {
    let kernels = Kernel::supported();
    if kernels.is_empty() {
        eprintln!("this CPU has no kernel (no AVX2): nothing to compare");
        return;
    }
    // 37 outputs: tiles of four and two columns, then single ones; 1..=9 rows: every tile
    // height and more than one tile.
    for (rows, depth) in [(37, 96), (64, 576)] {
        let weights = quantized(rows, depth, rows as u64);
        let candle = QMatMul::from_qtensor(quantized(rows, depth, rows as u64)).expect("QMatMul");
        for m in 1..=9 {
            let x = Tensor::from_vec(
                values(m * depth, 100 + m as u64, 3.0),
                (m, depth),
                &Device::Cpu,
            )
            .expect("activations");
            let expected = bits(&candle.forward(&x).expect("candle"));
            for &kernel in &kernels {
                let matrix = QuantizedMatrix::with_kernel(&weights, kernel)
                    .expect("matrix")
                    .expect("a Q8_0 matrix");
                let found = bits(&matrix.forward(&x).expect("product"));
                assert_eq!(found, expected, "{kernel:?}, {m} rows × {rows}×{depth}");
            }
        }
    }
}

#[test]
fn a_zero_block_and_extreme_values_match_too() {
    let Some(kernel) = Kernel::detect() else {
        return;
    };
    let depth = 64;
    // One block all zeros (scale 0), one with the largest magnitudes of both signs.
    let mut w = vec![0f32; 8 * depth];
    for (i, v) in w.iter_mut().enumerate() {
        if i % depth >= 32 {
            *v = if i % 2 == 0 { 1.0 } else { -1.0 };
        }
    }
    let weights = Tensor::from_vec(w, (8, depth), &Device::Cpu).expect("weights");
    let q = QTensor::quantize(&weights, GgmlDType::Q8_0).expect("Q8_0");
    let candle = QMatMul::from_qtensor(QTensor::quantize(&weights, GgmlDType::Q8_0).expect("Q8_0"))
        .expect("QMatMul");
    let mut x = values(3 * depth, 7, 1.0);
    x[..32].fill(0.0);
    x[40] = -1.0e6;
    let x = Tensor::from_vec(x, (3, depth), &Device::Cpu).expect("activations");
    let matrix = QuantizedMatrix::with_kernel(&q, kernel)
        .expect("matrix")
        .expect("Q8_0");
    assert_eq!(
        bits(&matrix.forward(&x).expect("product")),
        bits(&candle.forward(&x).expect("candle"))
    );
}

#[test]
fn wrong_widths_and_other_types_are_refused() {
    let Some(kernel) = Kernel::detect() else {
        return;
    };
    let weights = quantized(4, 64, 1);
    let matrix = QuantizedMatrix::with_kernel(&weights, kernel)
        .expect("matrix")
        .expect("Q8_0");
    let x = Tensor::zeros((2, 96), candle_core::DType::F32, &Device::Cpu).expect("x");
    let error = matrix
        .forward(&x)
        .expect_err("96 wide into a 64-wide matrix");
    assert_eq!(
        error.to_string(),
        "activations are 96 wide, the matrix takes 64"
    );
    let f32_weights = QTensor::quantize(
        &Tensor::zeros((4, 64), candle_core::DType::F32, &Device::Cpu).expect("zeros"),
        GgmlDType::F32,
    )
    .expect("F32");
    assert!(
        QuantizedMatrix::with_kernel(&f32_weights, kernel)
            .expect("no error")
            .is_none()
    );
}

/// The exact product of Q4_1 weights (as stored: f16 scale, f16 minimum, nibbles) and the
/// activations as quantized for it, in f64, with the sum of the terms' magnitudes.
fn exact_q4_1(weights: &QTensor, x: &[f32], m: usize) -> Vec<(f64, f64)> {
    let (rows, depth) = weights.shape().dims2().expect("2-D");
    let blocks = depth / 32;
    let data = weights.data().expect("bytes");
    let activations = Activations::quantize(x, m, depth);
    let mut out = Vec::new();
    for r in 0..m {
        for c in 0..rows {
            let (mut sum, mut magnitude) = (0f64, 0f64);
            for b in 0..blocks {
                let block = &data[(c * blocks + b) * 20..][..20];
                let d = f64::from(f16::from_le_bytes([block[0], block[1]]).to_f32());
                let min = f64::from(f16::from_le_bytes([block[2], block[3]]).to_f32());
                let q = &activations.quants[r * blocks + b];
                let mut dots = 0i64;
                for j in 0..16 {
                    dots += i64::from(block[4 + j] & 0x0F) * i64::from(q[j]);
                    dots += i64::from(block[4 + j] >> 4) * i64::from(q[j + 16]);
                }
                let xd = f64::from(activations.scales[r * blocks + b]);
                let xs = f64::from(activations.sums[r * blocks + b]);
                let terms = [d * xd * dots as f64, min * xs];
                sum += terms[0] + terms[1];
                magnitude += terms[0].abs() + terms[1].abs();
            }
            out.push((sum, magnitude));
        }
    }
    out
}

#[test]
fn q4_1_products_are_candles_bit_for_bit() {
    let kernels = Kernel::supported();
    if kernels.is_empty() {
        eprintln!("this CPU has no kernel (no AVX2): nothing to compare");
        return;
    }
    // candle's Q4_1 product takes an even number of blocks per row.
    for (rows, depth) in [(37, 128), (64, 576), (48, 1536)] {
        let weights = quantized_as(rows, depth, rows as u64, GgmlDType::Q4_1);
        let candle = QMatMul::from_qtensor(quantized_as(rows, depth, rows as u64, GgmlDType::Q4_1))
            .expect("QMatMul");
        for m in 1..=9 {
            let x = values(m * depth, 100 + m as u64, 3.0);
            let exact = exact_q4_1(&weights, &x, m);
            let x = Tensor::from_vec(x, (m, depth), &Device::Cpu).expect("activations");
            let theirs = candle.forward(&x).expect("candle");
            // Both compute the product of the quantized values: near the exact one.
            for (&theirs, &(exact, magnitude)) in floats(&theirs).iter().zip(&exact) {
                let bound = magnitude * 1e-5 + 1e-6;
                assert!(
                    (f64::from(theirs) - exact).abs() <= bound,
                    "{theirs} vs {exact}"
                );
            }
            for &kernel in &kernels {
                let matrix = QuantizedMatrix::with_kernel(&weights, kernel)
                    .expect("matrix")
                    .expect("a Q4_1 matrix");
                let ours = matrix.forward(&x).expect("product");
                assert_eq!(
                    bits(&ours),
                    bits(&theirs),
                    "{kernel:?}, {m} rows × {rows}×{depth}"
                );
            }
        }
    }
}

#[test]
fn q8_0_shapes_candle_tiles_itself_stay_with_candle() {
    // On a VNNI CPU candle multiplies Q8_0 with inputs a multiple of 256 and outputs a
    // multiple of 16 through its own repacked tiles, whose activation quantization differs:
    // those matrices stay with candle, so a model's results do not change.
    let Some(kernel) = Kernel::detect() else {
        return;
    };
    let candle_tiles = quantized(32, 512, 1);
    let ours = quantized(32, 576, 1);
    assert!(
        QuantizedMatrix::from_qtensor(&ours)
            .expect("no error")
            .is_some()
    );
    assert_eq!(
        QuantizedMatrix::from_qtensor(&candle_tiles)
            .expect("no error")
            .is_some(),
        kernel == Kernel::Avx2,
        "{kernel:?}"
    );
    // Q4_1 has no candle kernel to defer to.
    let q4 = quantized_as(32, 512, 1, GgmlDType::Q4_1);
    assert!(
        QuantizedMatrix::from_qtensor(&q4)
            .expect("no error")
            .is_some()
    );
}

#[test]
fn activations_round_ties_away_from_zero_on_every_path() {
    // With the largest magnitude 127 the scale is 1, so these values are exact ties: half
    // away from zero gives ±1, ±3, ±4, ±127 (to even would give 0, 2, 4, 126).
    let mut x = vec![0.5f32, -0.5, 2.5, -2.5, 3.5, -3.5, 126.5, -127.0];
    x.extend(values(32 - x.len(), 9, 100.0));
    // A block too small for its scale's inverse (infinite), and one holding a NaN.
    x.extend([1e-40f32, -1e-40, 0.0, 5e-41]);
    x.extend(values(28, 11, 1e-40));
    x.extend([f32::NAN, 1.0, -1.0, 0.25]);
    x.extend(values(28, 12, 1.0));
    x.extend(values(64, 10, 3.0));
    let (rows, depth) = (5, 32);
    let dispatched = Activations::quantize(&x, rows, depth);
    let portable = Activations::quantize_portable(&x, rows, depth);
    assert_eq!(
        &dispatched.quants[0][..8],
        &[1i8, -1, 3, -3, 4, -4, 127, -127]
    );
    assert_eq!(dispatched.quants, portable.quants);
    // candle's own formula: `round(x / d) as i8`, the cast saturating.
    let candles: Vec<[i8; 32]> = x
        .chunks_exact(32)
        .map(|block| {
            let d = block.iter().fold(0f32, |amax, x| amax.max(x.abs())) / 127.0;
            let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
            std::array::from_fn(|j| f32::round(block[j] * inverse) as i8)
        })
        .collect();
    assert_eq!(dispatched.quants, candles);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dispatched.scales), bits(&portable.scales));
    assert_eq!(bits(&dispatched.sums), bits(&portable.sums));
}

#[test]
fn products_made_together_are_each_products_bits() {
    let Some(kernel) = Kernel::detect() else {
        return;
    };
    // A layer's query, key and value: different heights, both quantizations, one width.
    let weights = [
        quantized_as(37, 128, 1, GgmlDType::Q4_1),
        quantized_as(12, 128, 2, GgmlDType::Q8_0),
        quantized_as(64, 128, 3, GgmlDType::Q4_1),
    ];
    let matrices: Vec<QuantizedMatrix> = weights
        .iter()
        .map(|w| {
            QuantizedMatrix::with_kernel(w, kernel)
                .expect("matrix")
                .expect("Q8_0 or Q4_1")
        })
        .collect();
    let each: Vec<&QuantizedMatrix> = matrices.iter().collect();
    for m in [1, 4, 6] {
        let x = Tensor::from_vec(values(m * 128, 40 + m as u64, 2.0), (m, 128), &Device::Cpu)
            .expect("activations");
        let together = super::forward_each(&each, &x).expect("products");
        assert_eq!(together.len(), 3);
        for (matrix, product) in matrices.iter().zip(&together) {
            assert_eq!(
                bits(product),
                bits(&matrix.forward(&x).expect("product")),
                "{m} rows"
            );
        }
    }
    let narrow = QuantizedMatrix::with_kernel(&quantized(4, 64, 4), kernel)
        .expect("matrix")
        .expect("Q8_0");
    let x = Tensor::zeros((2, 128), candle_core::DType::F32, &Device::Cpu).expect("x");
    let error = super::forward_each(&[&matrices[0], &narrow], &x)
        .expect_err("a 64-wide matrix among 128-wide ones");
    assert_eq!(
        error.to_string(),
        "activations are 128 wide, the matrix takes 64"
    );
}
