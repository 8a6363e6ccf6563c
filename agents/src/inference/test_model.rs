//! Tiny GGUF models with seeded random weights: what tests and the demo run, since nothing
//! downloads weights. They produce noise, not language, but every architecture and
//! vocabulary kind the agent supports is written the way llama.cpp writes real models, so
//! loading, tokenizing and the forward pass are the real code paths.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rand::{Rng as _, SeedableRng as _};

use super::InferenceError;
use super::architecture::Architecture;
use super::tokenizer::SPACE;

const EMBED: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = EMBED / HEADS;
const LAYERS: usize = 2;
const FEED_FORWARD: usize = 64;
/// The context length test models declare unless told otherwise.
pub const TEST_CONTEXT: usize = 512;

/// The kind of vocabulary a test model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestVocabulary {
    /// `gpt2`: the 256 byte-level symbols and the control tokens `<|endoftext|>`,
    /// `<|im_start|>`, `<|im_end|>` (the end of an answer), no merges; the ChatML chat
    /// template ([`CHATML_TEMPLATE`]).
    #[default]
    ByteLevel,
    /// `llama` (SentencePiece): `<unk>`, `<s>`, `</s>`, the 256 `<0xNN>` byte pieces, `▁`,
    /// the letters a–z, and scored pieces that merge into `▁hello` and `▁world`; the
    /// Llama 2 chat template ([`INSTRUCT_TEMPLATE`]).
    SentencePiece,
}

impl TestVocabulary {
    /// Every kind, in the order their names are listed to users.
    pub const ALL: [TestVocabulary; 2] = [Self::ByteLevel, Self::SentencePiece];

    /// The name the CLI takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::ByteLevel => "byte-level",
            Self::SentencePiece => "sentencepiece",
        }
    }
}

impl std::str::FromStr for TestVocabulary {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("unknown vocabulary `{s}` (byte-level or sentencepiece)"))
    }
}

/// What [`write_test_model`] writes: 2 layers, 32 wide, 4 query heads over 2 key/value
/// heads, F32 weights drawn from a ChaCha generator seeded with `seed` (the same
/// description writes the same file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestModel {
    /// Seed of the weights.
    pub seed: u64,
    /// Architecture (tensor layout and metadata keys).
    pub architecture: Architecture,
    /// Vocabulary kind.
    pub vocabulary: TestVocabulary,
    /// The context length it declares (`{architecture}.context_length`).
    pub context: usize,
    /// Store the layers' projections whose rows are a multiple of 64 long as Q4_1 (as
    /// SmolLM2's file does) instead of F32.
    pub q4_1_projections: bool,
}

impl TestModel {
    /// A llama model with a byte-level vocabulary.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            architecture: Architecture::Llama,
            vocabulary: TestVocabulary::ByteLevel,
            context: TEST_CONTEXT,
            q4_1_projections: false,
        }
    }

    /// The same model with its layers' projections stored as Q4_1.
    pub fn q4_1_projections(self) -> Self {
        Self {
            q4_1_projections: true,
            ..self
        }
    }

    /// The same model in another architecture.
    pub fn architecture(self, architecture: Architecture) -> Self {
        Self {
            architecture,
            ..self
        }
    }

    /// The same model with another vocabulary.
    pub fn vocabulary(self, vocabulary: TestVocabulary) -> Self {
        Self { vocabulary, ..self }
    }

    /// The same model declaring another context length.
    pub fn context(self, context: usize) -> Self {
        Self { context, ..self }
    }
}

/// Writes `model` to `path` as GGUF.
pub fn write_test_model(path: &Path, model: &TestModel) -> Result<(), InferenceError> {
    let failed = |e: candle_core::Error| InferenceError::Model {
        path: path.to_path_buf(),
        reason: super::reason(&e),
    };
    let (tokenizer_metadata, vocab, end_of_text) = match model.vocabulary {
        TestVocabulary::ByteLevel => byte_level_vocabulary(),
        TestVocabulary::SentencePiece => sentencepiece_vocabulary(),
    };

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(model.seed);
    let mut tensor = |dims: &[usize], scale: f32| -> Result<QTensor, InferenceError> {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        let t = Tensor::from_vec(values, dims, &Device::Cpu).map_err(failed)?;
        QTensor::quantize(&t, GgmlDType::F32).map_err(failed)
    };
    let ones = |n: usize| -> Result<QTensor, InferenceError> {
        let t = Tensor::ones(n, DType::F32, &Device::Cpu).map_err(failed)?;
        QTensor::quantize(&t, GgmlDType::F32).map_err(failed)
    };
    // The end-of-text row of the output projection is zero, so its logit is 0 among random
    // ones and the model rarely stops at once: the demo shows some tokens.
    let output_projection = |random: QTensor| -> Result<QTensor, InferenceError> {
        let random = random.dequantize(&Device::Cpu).map_err(failed)?;
        let mask: Vec<f32> = (0..vocab)
            .map(|i| if i == end_of_text as usize { 0.0 } else { 1.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (vocab, 1), &Device::Cpu).map_err(failed)?;
        let t = random.broadcast_mul(&mask).map_err(failed)?;
        QTensor::quantize(&t, GgmlDType::F32).map_err(failed)
    };
    let mut named: Vec<(String, QTensor)> = if model.architecture == Architecture::Gemma3 {
        // Gemma ties its output projection to the embeddings, and its files carry no
        // `output.weight`.
        let token_embd = output_projection(tensor(&[vocab, EMBED], 1.0)?)?;
        vec![("token_embd.weight".into(), token_embd)]
    } else {
        let token_embd = tensor(&[vocab, EMBED], 1.0)?;
        vec![
            ("token_embd.weight".into(), token_embd),
            (
                "output.weight".into(),
                output_projection(tensor(&[vocab, EMBED], 1.0)?)?,
            ),
        ]
    };
    named.push(("output_norm.weight".into(), ones(EMBED)?));
    let kv = KV_HEADS * HEAD_DIM;
    for layer in 0..LAYERS {
        let p = format!("blk.{layer}");
        let projections: &[(&str, [usize; 2])] = if model.architecture == Architecture::Phi3 {
            // Phi-3 fuses the query, key and value projections, and the gate and up ones.
            &[
                ("attn_qkv.weight", [EMBED + 2 * kv, EMBED]),
                ("attn_output.weight", [EMBED, EMBED]),
                ("ffn_up.weight", [2 * FEED_FORWARD, EMBED]),
                ("ffn_down.weight", [EMBED, FEED_FORWARD]),
            ]
        } else {
            &[
                ("attn_q.weight", [EMBED, EMBED]),
                ("attn_k.weight", [kv, EMBED]),
                ("attn_v.weight", [kv, EMBED]),
                ("attn_output.weight", [EMBED, EMBED]),
                ("ffn_gate.weight", [FEED_FORWARD, EMBED]),
                ("ffn_up.weight", [FEED_FORWARD, EMBED]),
                ("ffn_down.weight", [EMBED, FEED_FORWARD]),
            ]
        };
        for (name, dims) in projections {
            let mut weights = tensor(dims, 0.3)?;
            // candle's Q4_1 product takes rows of whole pairs of 32-value blocks.
            if model.q4_1_projections && dims[1] % 64 == 0 {
                let values = weights.dequantize(&Device::Cpu).map_err(failed)?;
                weights = QTensor::quantize(&values, GgmlDType::Q4_1).map_err(failed)?;
            }
            named.push((format!("{p}.{name}"), weights));
        }
        match model.architecture {
            Architecture::Llama | Architecture::Phi3 => {}
            Architecture::Qwen2 => {
                named.push((format!("{p}.attn_q.bias"), tensor(&[EMBED], 0.3)?));
                named.push((format!("{p}.attn_k.bias"), tensor(&[kv], 0.3)?));
                named.push((format!("{p}.attn_v.bias"), tensor(&[kv], 0.3)?));
            }
            Architecture::Qwen3 => {
                named.push((format!("{p}.attn_q_norm.weight"), ones(HEAD_DIM)?));
                named.push((format!("{p}.attn_k_norm.weight"), ones(HEAD_DIM)?));
            }
            Architecture::Gemma3 => {
                named.push((format!("{p}.attn_q_norm.weight"), ones(HEAD_DIM)?));
                named.push((format!("{p}.attn_k_norm.weight"), ones(HEAD_DIM)?));
                // Large, so the layers' outputs outweigh the scaled embedding in the residual:
                // with a tied output, a model whose residual is mostly its input embedding
                // predicts its last input token whatever its weights.
                named.push((
                    format!("{p}.post_attention_norm.weight"),
                    tensor(&[EMBED], 8.0)?,
                ));
                named.push((format!("{p}.post_ffw_norm.weight"), tensor(&[EMBED], 8.0)?));
            }
        }
        named.push((format!("{p}.attn_norm.weight"), ones(EMBED)?));
        named.push((format!("{p}.ffn_norm.weight"), ones(EMBED)?));
    }

    let arch = model.architecture.name();
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String("murmur-test-model".into()),
        ),
        (key("context_length"), Value::U32(model.context as u32)),
        (key("embedding_length"), Value::U32(EMBED as u32)),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("feed_forward_length"), Value::U32(FEED_FORWARD as u32)),
        (key("attention.head_count"), Value::U32(HEADS as u32)),
        (key("attention.head_count_kv"), Value::U32(KV_HEADS as u32)),
        (key("rope.dimension_count"), Value::U32(HEAD_DIM as u32)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
    ];
    if model.architecture == Architecture::Qwen3 {
        metadata.push((key("attention.key_length"), Value::U32(HEAD_DIM as u32)));
        // F32 activations (candle's Qwen 3 defaults to F16 without this key).
        metadata.push(("general.dtype".into(), Value::U32(0)));
    }
    if model.architecture == Architecture::Gemma3 {
        metadata.push((key("attention.key_length"), Value::U32(HEAD_DIM as u32)));
        metadata.push((key("attention.value_length"), Value::U32(HEAD_DIM as u32)));
        // Shorter than a prompt with its answer, so the sliding-window path runs too.
        metadata.push((key("attention.sliding_window"), Value::U32(8)));
    }
    metadata.extend(tokenizer_metadata);
    metadata.push((
        "tokenizer.ggml.eos_token_id".into(),
        Value::U32(end_of_text),
    ));

    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = named.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let io = |source| InferenceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    gguf_file::write(&mut file, &metadata, &tensors).map_err(failed)?;
    Ok(())
}

type VocabularyMetadata = (Vec<(String, Value)>, usize, u32);

/// `gpt2`: the byte-level alphabet in byte order, as GPT-2's tokenizer maps bytes to
/// symbols, then the control tokens `<|endoftext|>`, `<|im_start|>` and `<|im_end|>`, and
/// the ChatML template.
fn byte_level_vocabulary() -> VocabularyMetadata {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort_by_key(|c| byte_of_symbol(*c));
    let mut tokens: Vec<Value> = alphabet
        .iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    let end_of_text = tokens.len() as u32;
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(Value::String(special.into()));
    }
    let vocab = tokens.len();
    const NORMAL: i32 = 1;
    const CONTROL: i32 = 3;
    let types = (0..vocab)
        .map(|i| Value::I32(if i < 256 { NORMAL } else { CONTROL }))
        .collect();
    let metadata = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(Vec::new())),
        // `<|im_end|>` ends an answer, as in Qwen's chat models.
        (
            "tokenizer.ggml.eot_token_id".into(),
            Value::U32(end_of_text + 2),
        ),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML_TEMPLATE.into()),
        ),
    ];
    (metadata, vocab, end_of_text)
}

/// The ChatML chat template (Qwen's, without its default system message).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Llama 2's chat template without system messages (as Mistral Instruct's): it writes the
/// beginning-of-sequence token itself.
pub const INSTRUCT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

/// Scored pieces of the SentencePiece test vocabulary, highest-priority merge first.
/// `el` scores below the pieces of `▁hello`, so merging in the wrong order would end at
/// `▁h el l o`.
const MERGED_PIECES: [&str; 11] = [
    "\u{2581}h",
    "ll",
    "\u{2581}he",
    "llo",
    "\u{2581}hello",
    "\u{2581}w",
    "or",
    "\u{2581}wor",
    "ld",
    "\u{2581}world",
    "el",
];

/// `llama`: control pieces, byte pieces, `▁`, a–z, then [`MERGED_PIECES`], as llama.cpp
/// writes a SentencePiece model (tokens, scores, types).
fn sentencepiece_vocabulary() -> VocabularyMetadata {
    const NORMAL: i32 = 1;
    const UNKNOWN: i32 = 2;
    const CONTROL: i32 = 3;
    const BYTE: i32 = 6;
    let mut pieces: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, UNKNOWN),
        ("<s>".into(), 0.0, CONTROL),
        ("</s>".into(), 0.0, CONTROL),
    ];
    pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
    pieces.push((SPACE.into(), -1000.0, NORMAL));
    pieces.extend(('a'..='z').map(|c| (c.to_string(), -1000.0, NORMAL)));
    pieces.extend(
        MERGED_PIECES
            .iter()
            .enumerate()
            .map(|(rank, piece)| (piece.to_string(), -10.0 - rank as f32, NORMAL)),
    );
    let vocab = pieces.len();
    let metadata = vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(pieces.iter().map(|p| Value::String(p.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect()),
        ),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            Value::String(INSTRUCT_TEMPLATE.into()),
        ),
    ];
    (metadata, vocab, 2)
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
