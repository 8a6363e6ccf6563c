//! Inference: a GGUF language model run on the CPU with candle, and the handler an
//! `inference` agent runs for `llm.generate` tasks. Behind the `inference` feature, so a
//! build without it does not compile candle.
//!
//! - **Model**: the llama architecture as llama.cpp writes it (`llama.*` metadata, tensors
//!   `token_embd`, `blk.N.attn_q` …), in any quantization candle reads (F32, F16, Q4_0 …
//!   Q8_K). Nothing is downloaded: the operator names a file.
//! - **Tokenizer**: the model's own, from its GGUF metadata (`tokenizer.ggml.*`, byte-level
//!   BPE vocabularies of type `gpt2`), built by candle's `TokenizerFromGguf` with the
//!   `tokenizers` crate. A model whose vocabulary is another kind is refused at load time.
//! - **Decoding is greedy** (the most likely token at each step): the same model and prompt
//!   give the same tokens on every run, so a task's output can be checked and a retried
//!   attempt gives the same answer.
//! - [`write_test_model`] writes a tiny model with seeded random weights and a byte-level
//!   vocabulary: what tests and the demo run, since nothing fetches weights at run time.

use std::io::Seek;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::worker::{Handler, TaskContext};

/// Context length candle's llama implementation precomputes rotary tables for.
const MAX_CONTEXT: usize = 4096;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The file could not be read.
    #[error("reading model {path}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not a GGUF file, or not a llama-architecture model candle can run.
    #[error("model {path} is not a usable GGUF llama model: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What candle reported.
        reason: String,
    },
    /// The GGUF metadata holds no tokenizer this module can build.
    #[error("model {path} has no usable tokenizer: {reason}")]
    Tokenizer {
        /// The model file.
        path: PathBuf,
        /// What was missing or unsupported.
        reason: String,
    },
    /// The prompt encodes to no token.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Prompt and generation do not fit in the model's context.
    #[error(
        "a prompt of {prompt_tokens} tokens plus {max_tokens} to generate exceeds the model's context of {context} tokens"
    )]
    TooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens asked for.
        max_tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// A tensor operation failed while generating.
    #[error("generation failed: {0}")]
    Compute(String),
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-text token.
    EndOfText,
    /// `max_tokens` were generated.
    MaxTokens,
}

/// What one generation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text (the prompt not included).
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Tokens the prompt encoded to.
    pub prompt_tokens: usize,
    /// Why it stopped.
    pub stop: StopReason,
    /// SHA-256 of the model file, hex: which model answered.
    pub model_sha256: String,
}

/// A loaded model with its tokenizer. Generation clones the weights' handles (the tensors
/// are shared, only the attention caches are per call), so one model serves concurrent
/// attempts.
pub struct GgufModel {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    end_of_text: Option<u32>,
    context: usize,
    sha256: String,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("sha256", &self.sha256)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl GgufModel {
    /// Loads a GGUF llama model and its tokenizer from `path`.
    pub fn load(path: &Path) -> Result<Self, InferenceError> {
        let io = |source| InferenceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let model = |e: candle_core::Error| InferenceError::Model {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io)?;
        let sha256 = crate::artifacts::to_hex(&hasher.finalize());
        file.rewind().map_err(io)?;
        let content = gguf_file::Content::read(&mut file).map_err(model)?;
        let tokenizer = Tokenizer::from_gguf(&content).map_err(|e| InferenceError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let metadata_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
        let end_of_text = metadata_u32("tokenizer.ggml.eos_token_id");
        let context = metadata_u32("llama.context_length")
            .map_or(MAX_CONTEXT, |c| (c as usize).min(MAX_CONTEXT));
        let weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).map_err(model)?;
        Ok(Self {
            weights,
            tokenizer,
            end_of_text,
            context,
            sha256,
        })
    }

    /// SHA-256 of the model file, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Generates up to `max_tokens` tokens after `prompt`, greedily. CPU-bound: call it from
    /// a blocking thread in async code.
    pub fn generate(&self, prompt: &str, max_tokens: usize) -> Result<Generation, InferenceError> {
        let compute = |e: candle_core::Error| InferenceError::Compute(e.to_string());
        let prompt_ids = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| InferenceError::Compute(format!("encoding the prompt: {e}")))?
            .get_ids()
            .to_vec();
        if prompt_ids.is_empty() {
            return Err(InferenceError::EmptyPrompt);
        }
        if prompt_ids.len() + max_tokens > self.context {
            return Err(InferenceError::TooLong {
                prompt_tokens: prompt_ids.len(),
                max_tokens,
                context: self.context,
            });
        }
        let device = Device::Cpu;
        let mut weights = self.weights.clone();
        let mut tokens = Vec::with_capacity(max_tokens);
        let mut stop = StopReason::MaxTokens;
        let mut input = prompt_ids.clone();
        let mut position = 0;
        while tokens.len() < max_tokens {
            let x = Tensor::new(input.as_slice(), &device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(compute)?;
            let logits = weights.forward(&x, position).map_err(compute)?;
            position += input.len();
            let next = logits
                .squeeze(0)
                .and_then(|l| l.argmax(0))
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(compute)?;
            if Some(next) == self.end_of_text {
                stop = StopReason::EndOfText;
                break;
            }
            tokens.push(next);
            input = vec![next];
        }
        let text = self
            .tokenizer
            .decode(&tokens, true)
            .map_err(|e| InferenceError::Compute(format!("decoding: {e}")))?;
        Ok(Generation {
            text,
            tokens,
            prompt_tokens: prompt_ids.len(),
            stop,
            model_sha256: self.sha256.clone(),
        })
    }
}

/// What an `llm.generate` task asks for (its input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: String,
    /// Most tokens to generate.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
}

fn default_max_tokens() -> usize {
    32
}

/// Most tokens one task may ask for: a bound on one attempt's CPU time.
pub const MAX_TOKENS_PER_TASK: usize = 1024;

/// The worker handler of an inference agent: each attempt decodes its input as a
/// [`GenerateRequest`], generates on a blocking thread and returns the [`Generation`]. A
/// malformed input or a prompt that does not fit fails the attempt with the reason.
pub fn generate_handler(model: Arc<GgufModel>) -> Handler {
    crate::worker::handler(move |ctx: TaskContext| {
        let model = model.clone();
        async move {
            let request: GenerateRequest = serde_json::from_value(ctx.input).map_err(|e| {
                format!("an llm.generate task takes {{\"prompt\": text, \"max_tokens\": n}}: {e}")
            })?;
            if request.max_tokens > MAX_TOKENS_PER_TASK {
                return Err(format!(
                    "max_tokens {} is above the limit of {MAX_TOKENS_PER_TASK}",
                    request.max_tokens
                ));
            }
            let generation = tokio::task::spawn_blocking(move || {
                model.generate(&request.prompt, request.max_tokens)
            })
            .await
            .map_err(|e| format!("the generation thread failed: {e}"))?
            .map_err(|e| e.to_string())?;
            serde_json::to_value(generation).map_err(|e| e.to_string())
        }
    })
}

/// Writes a tiny llama-architecture model to `path`: 2 layers, 32-wide, a byte-level BPE
/// vocabulary of the 256 byte symbols plus `<|endoftext|>`, and F32 weights drawn from a
/// ChaCha generator seeded with `seed` (the same seed writes the same file). It produces
/// noise, not language; it is what tests and the demo run, since nothing downloads weights.
pub fn write_test_model(path: &Path, seed: u64) -> Result<(), InferenceError> {
    use candle_core::quantized::gguf_file::Value;
    use rand::{Rng as _, SeedableRng as _};

    const EMBED: usize = 32;
    const HEADS: usize = 4;
    const LAYERS: usize = 2;
    const FEED_FORWARD: usize = 64;
    let model = |e: candle_core::Error| InferenceError::Model {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // The byte-level alphabet in byte order, as GPT-2's tokenizer maps bytes to symbols.
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort_by_key(|c| byte_of_symbol(*c));
    let mut tokens: Vec<Value> = alphabet
        .iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    tokens.push(Value::String("<|endoftext|>".into()));
    let vocab = tokens.len();
    let end_of_text = (vocab - 1) as u32;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tensor = |dims: &[usize], scale: f32| -> Result<QTensor, InferenceError> {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        let t = Tensor::from_vec(values, dims, &Device::Cpu).map_err(model)?;
        QTensor::quantize(&t, GgmlDType::F32).map_err(model)
    };
    let ones = |n: usize| -> Result<QTensor, InferenceError> {
        let t = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).map_err(model)?;
        QTensor::quantize(&t, GgmlDType::F32).map_err(model)
    };
    let token_embd = tensor(&[vocab, EMBED], 1.0)?;
    // The end-of-text row of the output projection is zero, so its logit is 0 among random
    // ones and the model rarely stops at once: the demo shows some tokens.
    let output = {
        let random = tensor(&[vocab - 1, EMBED], 1.0)?
            .dequantize(&Device::Cpu)
            .map_err(model)?;
        let zero =
            Tensor::zeros((1, EMBED), candle_core::DType::F32, &Device::Cpu).map_err(model)?;
        let t = Tensor::cat(&[&random, &zero], 0).map_err(model)?;
        QTensor::quantize(&t, GgmlDType::F32).map_err(model)?
    };
    let mut named: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), token_embd),
        ("output_norm.weight".into(), ones(EMBED)?),
        ("output.weight".into(), output),
    ];
    for layer in 0..LAYERS {
        let p = format!("blk.{layer}");
        for (name, dims) in [
            ("attn_q", [EMBED, EMBED]),
            ("attn_k", [EMBED, EMBED]),
            ("attn_v", [EMBED, EMBED]),
            ("attn_output", [EMBED, EMBED]),
            ("ffn_gate", [FEED_FORWARD, EMBED]),
            ("ffn_up", [FEED_FORWARD, EMBED]),
            ("ffn_down", [EMBED, FEED_FORWARD]),
        ] {
            named.push((format!("{p}.{name}.weight"), tensor(&dims, 0.3)?));
        }
        named.push((format!("{p}.attn_norm.weight"), ones(EMBED)?));
        named.push((format!("{p}.ffn_norm.weight"), ones(EMBED)?));
    }
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("murmur-test-model".into())),
        ("llama.context_length", Value::U32(512)),
        ("llama.embedding_length", Value::U32(EMBED as u32)),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.feed_forward_length", Value::U32(FEED_FORWARD as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(HEADS as u32)),
        (
            "llama.rope.dimension_count",
            Value::U32((EMBED / HEADS) as u32),
        ),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.merges", Value::Array(Vec::new())),
        ("tokenizer.ggml.eos_token_id", Value::U32(end_of_text)),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = named.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let io = |source| InferenceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    gguf_file::write(&mut file, &metadata, &tensors).map_err(model)?;
    Ok(())
}

/// The byte a GPT-2 byte-level symbol stands for (printable bytes are themselves; the
/// others were shifted to 256 and up, in byte order).
fn byte_of_symbol(c: char) -> u32 {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let code = c as u32;
    if code < 256 && printable(code) {
        return code;
    }
    // The n-th non-printable byte is symbol 256 + n.
    let n = code - 256;
    (0u32..256)
        .filter(|b| !printable(*b))
        .nth(n as usize)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_model_loads_and_generates_the_same_tokens_every_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.gguf");
        write_test_model(&path, 7).expect("written");
        let model = GgufModel::load(&path).expect("loads");
        let a = model.generate("hello murmur", 12).expect("generates");
        let b = model.generate("hello murmur", 12).expect("generates again");
        assert_eq!(a, b, "greedy decoding is deterministic");
        // One token per byte (there are no merges), after the space the gpt2 pre-tokenizer
        // puts in front of the text.
        assert_eq!(a.prompt_tokens, " hello murmur".len());
        assert!(
            a.stop == StopReason::EndOfText || a.tokens.len() == 12,
            "{a:?}"
        );
        assert_eq!(a.model_sha256.len(), 64);
        // Another seed is another model: another answer, another hash.
        let other_path = dir.path().join("other.gguf");
        write_test_model(&other_path, 8).expect("written");
        let other = GgufModel::load(&other_path).expect("loads");
        let c = other.generate("hello murmur", 12).expect("generates");
        assert_ne!(c.model_sha256, a.model_sha256);
        assert_ne!(c.tokens, a.tokens);
        // The same seed writes the same file.
        let again = dir.path().join("again.gguf");
        write_test_model(&again, 7).expect("written");
        assert_eq!(
            std::fs::read(&again).expect("read"),
            std::fs::read(&path).expect("read")
        );
    }

    #[test]
    fn bad_models_and_prompts_get_typed_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = GgufModel::load(&dir.path().join("nope.gguf"));
        assert!(
            matches!(missing, Err(InferenceError::Io { .. })),
            "{missing:?}"
        );
        let junk = dir.path().join("junk.gguf");
        std::fs::write(&junk, b"not a gguf file at all").expect("write");
        let junk = GgufModel::load(&junk);
        assert!(
            matches!(junk, Err(InferenceError::Model { .. })),
            "{junk:?}"
        );

        let path = dir.path().join("tiny.gguf");
        write_test_model(&path, 1).expect("written");
        let model = GgufModel::load(&path).expect("loads");
        assert!(matches!(
            model.generate("", 4),
            Err(InferenceError::EmptyPrompt)
        ));
        let long = "x".repeat(500);
        assert!(matches!(
            model.generate(&long, 100),
            Err(InferenceError::TooLong { context: 512, .. })
        ));
    }

    #[test]
    fn byte_symbols_sort_into_byte_order() {
        let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
            .into_iter()
            .collect();
        alphabet.sort_by_key(|c| byte_of_symbol(*c));
        let bytes: Vec<u32> = alphabet.iter().map(|c| byte_of_symbol(*c)).collect();
        assert_eq!(bytes, (0..256).collect::<Vec<u32>>());
        assert_eq!(alphabet[b' ' as usize], 'Ġ');
        assert_eq!(alphabet[b'a' as usize], 'a');
    }
}
