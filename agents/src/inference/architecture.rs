//! The model architectures an inference agent runs, as llama.cpp names them in
//! `general.architecture`, each with candle's quantized implementation.

use std::io::{Read, Seek};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3,
};

/// A model architecture this module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Llama 1–3, TinyLlama, Mistral, and the other models llama.cpp writes as `llama`.
    Llama,
    /// Qwen 2 and 2.5 (biased query, key and value projections).
    Qwen2,
    /// Qwen 3 (query and key normalisation).
    Qwen3,
    /// Phi-3 and Phi-3.5 (fused query/key/value and gate/up projections).
    Phi3,
    /// Gemma 3 (normalisation after attention and feed-forward, sliding-window attention on
    /// most layers, output tied to the embeddings).
    Gemma3,
}

impl Architecture {
    /// Every architecture, in the order their names are listed to users.
    pub const ALL: [Architecture; 5] = [
        Self::Llama,
        Self::Qwen2,
        Self::Qwen3,
        Self::Phi3,
        Self::Gemma3,
    ];

    /// The `general.architecture` value, also the prefix of the architecture's metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Phi3 => "phi3",
            Self::Gemma3 => "gemma3",
        }
    }

    /// The architecture named `name`, if this module runs it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The names this module runs, for messages: `llama, qwen2, qwen3, phi3, gemma3`.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| {
            format!(
                "unknown architecture `{s}` (this build runs {})",
                Self::names()
            )
        })
    }
}

/// One forward pass: logits of the token after `input`, whose first token sits at
/// `position` in the sequence. Each implementation keeps its attention cache between calls.
pub(super) trait Forward {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor>;
}

impl Forward for quantized_llama::ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        quantized_llama::ModelWeights::forward(self, input, position)
    }
}

impl Forward for quantized_qwen2::ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        quantized_qwen2::ModelWeights::forward(self, input, position)
    }
}

impl Forward for quantized_qwen3::ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        quantized_qwen3::ModelWeights::forward(self, input, position)
    }
}

impl Forward for quantized_phi3::ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        quantized_phi3::ModelWeights::forward(self, input, position)
    }
}

impl Forward for quantized_gemma3::ModelWeights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        quantized_gemma3::ModelWeights::forward(self, input, position)
    }
}

/// A generation's weights, each forward pass taken in turn with the other generations of the
/// same model. candle runs every pass on the one rayon pool; passes of generations side by
/// side fight over it (its workers spin while the callers run their serial parts) and four
/// at once made 0.76× the tokens of the same four one after another (docs/benchmarks.md).
/// Taking turns pass by pass keeps every generation streaming at the pool's full speed; the
/// fair lock hands the next pass to the generation that has waited longest.
pub(super) struct TakingTurns<'a> {
    pub(super) weights: &'a mut dyn Forward,
    pub(super) turns: &'a parking_lot::FairMutex<()>,
}

impl Forward for TakingTurns<'_> {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        let _turn = self.turns.lock();
        self.weights.forward(input, position)
    }
}

/// Loaded weights. `llama` models batch their generations' passes unless the model mixes
/// experts or batching is off. candle's Llama, Qwen 3, Phi-3 and Gemma 3 weights clone
/// cheaply (the tensors are shared), so each generation gets its own copy with empty caches
/// and generations run side by side, taking turns pass by pass. candle's Qwen 2 weights do
/// not clone: generations take turns on one copy, its cache cleared first.
pub(super) enum Weights {
    /// A `llama` model whose generations share each forward pass ([`super::batching`]).
    LlamaBatched(super::batching::Batcher),
    Llama(quantized_llama::ModelWeights),
    Qwen2(Mutex<quantized_qwen2::ModelWeights>),
    Qwen3(quantized_qwen3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

impl Weights {
    /// The weights in `content`; `llama` ones batched across generations when `batching`
    /// (positions up to `context`).
    pub(super) fn load<R: Read + Seek>(
        architecture: Architecture,
        content: Content,
        reader: &mut R,
        batching: Option<usize>,
    ) -> candle_core::Result<Self> {
        let cpu = &Device::Cpu;
        if let (Architecture::Llama, Some(context)) = (architecture, batching)
            && let Some(model) = super::batching::LlamaBatch::from_gguf(&content, reader, context)?
        {
            return Ok(Self::LlamaBatched(super::batching::Batcher::start(model)?));
        }
        Ok(match architecture {
            Architecture::Llama => Self::Llama(quantized_llama::ModelWeights::from_gguf(
                content, reader, cpu,
            )?),
            Architecture::Qwen2 => Self::Qwen2(Mutex::new(
                quantized_qwen2::ModelWeights::from_gguf(content, reader, cpu)?,
            )),
            Architecture::Qwen3 => Self::Qwen3(quantized_qwen3::ModelWeights::from_gguf(
                content, reader, cpu,
            )?),
            // Flash attention is a CUDA kernel; this module runs on the CPU.
            Architecture::Phi3 => Self::Phi3(quantized_phi3::ModelWeights::from_gguf(
                false, content, reader, cpu,
            )?),
            Architecture::Gemma3 => Self::Gemma3(quantized_gemma3::ModelWeights::from_gguf(
                content, reader, cpu,
            )?),
        })
    }

    /// Runs `generate` on weights whose attention caches are empty, its passes batched
    /// with the other generations' or taking `turns` with them.
    pub(super) fn with_fresh_cache<T>(
        &self,
        turns: &parking_lot::FairMutex<()>,
        generate: impl FnOnce(&mut dyn Forward) -> T,
    ) -> T {
        match self {
            Self::LlamaBatched(batcher) => generate(&mut batcher.open()),
            Self::Llama(weights) => generate(&mut TakingTurns {
                weights: &mut weights.clone(),
                turns,
            }),
            Self::Qwen3(weights) => generate(&mut TakingTurns {
                weights: &mut weights.clone(),
                turns,
            }),
            Self::Phi3(weights) => generate(&mut TakingTurns {
                weights: &mut weights.clone(),
                turns,
            }),
            Self::Gemma3(weights) => generate(&mut TakingTurns {
                weights: &mut weights.clone(),
                turns,
            }),
            Self::Qwen2(weights) => {
                // A generation that panicked left only a cache behind, which is cleared here.
                let mut weights = weights.lock().unwrap_or_else(|e| e.into_inner());
                weights.clear_kv_cache();
                let result = generate(&mut TakingTurns {
                    weights: &mut *weights,
                    turns,
                });
                weights.clear_kv_cache();
                result
            }
        }
    }
}
