//! QuantizedMatrix against candle's QMatMul on SmolLM2-135M's projection shapes, one to eight
//! activation rows, in one run: `cargo bench -p murmur-matmul`. Prints time per product
//! and the weight bytes streamed per second (what bounds a one-row product).

use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use murmur_matmul::{Kernel, QuantizedMatrix};

mod inputs;
mod median_time;
use median_time::time;

fn values(count: usize, seed: u64) -> Vec<f32> {
    inputs::unit_interval(count, seed)
        .map(|u| u - 0.5)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(kernel) = Kernel::detect() else {
        println!("this CPU has no kernel (no AVX2): nothing to measure");
        return Ok(());
    };
    println!(
        "kernel {kernel:?}, {} threads (candle's pool); times are medians",
        candle_core::utils::get_num_threads()
    );
    println!(
        "| shape (outputs × inputs) | rows | candle Q8_0 | tiled Q8_0 | speedup | GB/s | tiled Q4_1 | speedup | GB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // SmolLM2-135M: query/output (576×576), gate/up (1536×576), the tied output (49152×576),
    // and every layer's projections at once (30 layers, ~2.65 M weights each, not in cache).
    for (outputs, inputs, copies) in [
        (576, 576, 1),
        (1536, 576, 1),
        (49152, 576, 1),
        (1536, 576, 60),
    ] {
        let quantize = |dtype| -> Result<Vec<QTensor>, candle_core::Error> {
            (0..copies)
                .map(|i| {
                    let w = Tensor::from_vec(
                        values(outputs * inputs, i as u64),
                        (outputs, inputs),
                        &Device::Cpu,
                    )?;
                    QTensor::quantize(&w, dtype)
                })
                .collect()
        };
        let weights = quantize(GgmlDType::Q8_0)?;
        let tiled =
            |weights: &[QTensor]| -> Result<Vec<QuantizedMatrix>, murmur_matmul::MatmulError> {
                weights
                    .iter()
                    .map(|w| {
                        QuantizedMatrix::with_kernel(w, kernel).map(|m| m.expect("Q8_0 or Q4_1"))
                    })
                    .collect()
            };
        let ours = tiled(&weights)?;
        let ours_q4 = tiled(&quantize(GgmlDType::Q4_1)?)?;
        let bytes = |matrices: &[QuantizedMatrix]| {
            matrices.iter().map(|m| m.weight_bytes()).sum::<usize>() as f64
        };
        let theirs: Vec<QMatMul> = weights
            .into_iter()
            .map(QMatMul::from_qtensor)
            .collect::<Result<_, _>>()?;
        for rows in [1, 2, 4, 8] {
            let x = Tensor::from_vec(values(rows * inputs, 99), (rows, inputs), &Device::Cpu)?;
            let candle = time(|| {
                for m in &theirs {
                    m.forward(&x).expect("candle");
                }
            });
            let run = |matrices: &[QuantizedMatrix]| {
                time(|| {
                    for m in matrices {
                        m.forward(&x).expect("tiled");
                    }
                })
            };
            let (tiled, tiled_q4) = (run(&ours), run(&ours_q4));
            let label = if copies > 1 {
                format!("{copies} × {outputs} × {inputs}")
            } else {
                format!("{outputs} × {inputs}")
            };
            let micros = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "| {label} | {rows} | {:.1} µs | {:.1} µs | {:.2}× | {:.1} | {:.1} µs | {:.2}× | {:.1} |",
                micros(candle),
                micros(tiled),
                candle.as_secs_f64() / tiled.as_secs_f64(),
                bytes(&ours) / tiled.as_secs_f64() / 1e9,
                micros(tiled_q4),
                candle.as_secs_f64() / tiled_q4.as_secs_f64(),
                bytes(&ours_q4) / tiled_q4.as_secs_f64() / 1e9,
            );
        }
    }
    Ok(())
}
