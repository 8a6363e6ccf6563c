//! Weights stored in quantizations candle multiplies without SIMD kernels (Q4_1, Q5_0,
//! Q5_1: a scalar loop per block) are requantized to Q8_0 at load, whose dot product
//! candle runs with AVX2 or NEON. Those tensors then take ~1.7× the memory they take in
//! the file, and each token takes about a third of the time. A batched llama on an x86 CPU
//! keeps Q4_1 as stored: `murmur_matmul` multiplies it with SIMD, reading fewer bytes per
//! token than Q8_0.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek};

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};

/// Whether the model's CPU matrix product has no vectorised kernel for `dtype`: candle has
/// none for Q4_1, Q5_0 and Q5_1; `tiled` models (`murmur_matmul`'s) have one for Q4_1.
pub(super) fn slow_on_cpu(dtype: GgmlDType, tiled: bool) -> bool {
    match dtype {
        GgmlDType::Q4_1 => !tiled,
        GgmlDType::Q5_0 | GgmlDType::Q5_1 => true,
        _ => false,
    }
}

/// A requantized model: its GGUF header, the in-memory file it reads tensors from, and how
/// many tensors were converted.
pub(super) type Requantized = (Content, Cursor<Vec<u8>>, usize);

/// The model as an in-memory GGUF whose [`slow_on_cpu`] tensors are Q8_0, with how many
/// were converted; `None` when the file has none.
pub(super) fn to_q8_0<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    tiled: bool,
) -> candle_core::Result<Option<Requantized>> {
    let slow = content
        .tensor_infos
        .values()
        .filter(|info| slow_on_cpu(info.ggml_dtype, tiled))
        .count();
    if slow == 0 {
        return Ok(None);
    }
    let cpu = Device::Cpu;
    // In name order, so the same file gives the same bytes.
    let mut names: Vec<&str> = content.tensor_infos.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut tensors: Vec<(&str, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(reader, name, &cpu)?;
        let tensor = if slow_on_cpu(tensor.dtype(), tiled) {
            QTensor::quantize(&tensor.dequantize(&cpu)?, GgmlDType::Q8_0)?
        } else {
            tensor
        };
        tensors.push((name, tensor));
    }
    // The file is written with gguf_file's own alignment (32), read back as the default.
    let metadata: BTreeMap<&str, &gguf_file::Value> = content
        .metadata
        .iter()
        .filter(|(key, _)| key.as_str() != "general.alignment")
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.into_iter().collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut memory = Cursor::new(Vec::new());
    gguf_file::write(&mut memory, &metadata, &tensor_refs)?;
    drop(tensors);
    memory.set_position(0);
    let requantized = Content::read(&mut memory)?;
    Ok(Some((requantized, memory, slow)))
}
