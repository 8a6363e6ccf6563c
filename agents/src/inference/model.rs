//! A GGUF model on the CPU: loading, generation (greedy or seeded sampling, stop reasons) and scoring by log-probability.

use std::io::Seek;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::*;

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
    /// The sampling seed, when the tokens were sampled (absent for greedy decoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// How the next token is chosen from the model's logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// The most likely token.
    Greedy,
    /// A token drawn from the softmax of the logits divided by `temperature`, over the `top_k`
    /// most likely tokens and then the smallest set whose probability reaches `top_p` (each
    /// only when given), with a generator seeded by `seed`.
    Sample {
        /// Above 0; higher spreads the choice.
        temperature: f64,
        /// Keep only this many of the most likely tokens.
        top_k: Option<usize>,
        /// Keep only the most likely tokens whose probabilities sum to this (0 < p ≤ 1).
        top_p: Option<f64>,
        /// Seed of the generator: the same seed gives the same tokens.
        seed: u64,
    },
}

/// What to generate after a prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How each token is chosen.
    pub decoding: Decoding,
    /// Divides the logits of tokens among the last [`REPEAT_LAST_N`] (prompt included) by
    /// this (multiplies negative ones), as llama.cpp's `--repeat-penalty`; `None` or 1: off.
    pub repeat_penalty: Option<f32>,
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_tokens` tokens, no repeat penalty.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            decoding: Decoding::Greedy,
            repeat_penalty: None,
        }
    }
}

/// A loaded model with its tokenizer. One model serves concurrent attempts: each generation
/// gets attention caches of its own (see [`Architecture`] for which run side by side).
pub struct GgufModel {
    pub(super) architecture: Architecture,
    pub(super) name: Option<String>,
    pub(super) weights: Weights,
    pub(super) tokenizer: Tokenizer,
    pub(super) end_of_text: Option<u32>,
    /// The chat models' end of an answer, where it is not the end of text (Llama 3's
    /// `<|eot_id|>`): generation stops at either.
    pub(super) end_of_turn: Option<u32>,
    pub(super) beginning_of_text: Option<u32>,
    /// The chat template, or why there is none.
    pub(super) chat: Result<chat::ChatTemplate, String>,
    pub(super) context: usize,
    pub(super) sha256: String,
    /// Tensors requantized to Q8_0 at load (see [`LoadOptions::requantize_slow_weights`]).
    pub(super) requantized_tensors: usize,
    /// Bytes of the weights as loaded.
    pub(super) weight_bytes: u64,
    /// Bytes of one generation's attention caches at full context.
    pub(super) cache_bytes: u64,
    /// Entries in the model's logits (its embedding rows).
    pub(super) vocab_size: usize,
    /// The vocabulary as the grammar engine reads it, built on the first constrained
    /// generation.
    pub(super) grammar: std::sync::OnceLock<Result<grammar::GrammarVocabulary, String>>,
    /// One forward pass at a time across this model's generations when they are not batched (`architecture::TakingTurns`).
    pub(super) turns: parking_lot::FairMutex<()>,
}

/// How [`GgufModel::load_with`] loads a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Requantize the weights stored as Q4_1, Q5_0 or Q5_1 to Q8_0: candle has vectorised
    /// CPU kernels for Q8_0 and not for those, so generation runs ~3× faster for ~1.7× the
    /// memory of those tensors. On by default.
    pub requantize_slow_weights: bool,
    /// Run the generations of a `llama` model side by side in shared forward passes
    /// (continuous batching): each pass reads the weights once for all of them. Off, they
    /// take turns pass by pass. On by default.
    pub batch_generations: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            requantize_slow_weights: true,
            batch_generations: true,
        }
    }
}

/// Runs candle's code on a model file's contents, turning a panic into an error: its GGUF
/// reader and model builders trust what the file declares (a zero `general.alignment`
/// divides by zero; a dimension that does not match the architecture fails an
/// assertion), and a model file is written by whoever made it.
fn third_party<T>(doing: &str, run: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("the file is malformed: {doing} failed ({message})")
    })
}

/// [`Weights::load`] behind [`third_party`].
fn load_weights<R: std::io::Read + Seek>(
    path: &Path,
    architecture: Architecture,
    content: gguf_file::Content,
    reader: &mut R,
    batching: Option<usize>,
) -> Result<Weights, InferenceError> {
    third_party("building the model from its weights", || {
        Weights::load(architecture, content, reader, batching)
    })
    .and_then(|built| built.map_err(|e| reason(&e)))
    .map_err(|reason| InferenceError::Model {
        path: path.to_path_buf(),
        reason,
    })
}

/// Checks the tensor table against the file before anything is sized from it: each
/// tensor's element count and bytes fit in integers (candle multiplies the dimensions
/// unchecked) and its data lies inside the file.
fn check_tensor_table(content: &gguf_file::Content, file_size: u64) -> Result<(), String> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let info = &content.tensor_infos[name];
        let elements = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d))
            .ok_or_else(|| format!("tensor `{name}` declares more elements than fit in memory"))?;
        // candle views an empty tensor's bytes through a dangling, misaligned pointer (a
        // debug build aborts on it); no model has one.
        if elements == 0 {
            return Err(format!("tensor `{name}` has no elements"));
        }
        let block = info.ggml_dtype.block_size();
        if elements % block != 0 {
            return Err(format!(
                "tensor `{name}` has {elements} elements, not a multiple of its type's block of {block}"
            ));
        }
        let bytes = (elements / block)
            .checked_mul(info.ggml_dtype.type_size())
            .ok_or_else(|| format!("tensor `{name}` declares more bytes than fit in memory"))?;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(bytes as u64));
        if end.is_none_or(|end| end > file_size) {
            return Err(format!(
                "tensor `{name}` ({bytes} bytes at offset {}) runs past the end of the file ({file_size} bytes)",
                info.offset
            ));
        }
    }
    Ok(())
}

/// The most experts a mixture-of-experts file may declare (the largest published models
/// have 256).
const MAX_EXPERTS: u32 = 1024;

/// Checks the sizes candle builds tables from before it builds them: the model's width
/// must be its embedding tensor's, and no head or rotary dimension may exceed it (candle
/// sizes its rotary tables as context × rotary dimension, unchecked: a file declaring a
/// dimension of billions asked for terabytes).
fn check_dimensions(
    content: &gguf_file::Content,
    architecture: Architecture,
) -> Result<(), String> {
    let embedding = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or("the file has no token_embd.weight tensor")?;
    let width = match embedding.shape.dims() {
        [_, width] => *width,
        dims => {
            return Err(format!(
                "token_embd.weight has shape {dims:?}, not [vocabulary, width]"
            ));
        }
    };
    let key = |name: &str| format!("{}.{name}", architecture.name());
    let declared = |name: &str| content.metadata.get(&key(name)).map(|v| v.to_u32());
    match declared("embedding_length") {
        Some(Ok(n)) if n as usize == width => {}
        Some(Ok(n)) => {
            return Err(format!(
                "{} is {n}, but token_embd.weight is {width} wide",
                key("embedding_length")
            ));
        }
        Some(Err(_)) => return Err(format!("{} is not an integer", key("embedding_length"))),
        None => {}
    }
    // candle reserves a layer per declared block, and an expert per declared expert, before
    // it reads a tensor.
    if let Some(Ok(blocks)) = declared("block_count") {
        let last = format!("blk.{}.", blocks.saturating_sub(1));
        if blocks as usize > content.tensor_infos.len()
            || (blocks > 0 && !content.tensor_infos.keys().any(|n| n.starts_with(&last)))
        {
            return Err(format!(
                "{} is {blocks}, but the file has no tensors for block {}",
                key("block_count"),
                blocks.saturating_sub(1)
            ));
        }
    }
    if let Some(Ok(experts)) = declared("expert_count")
        && experts > MAX_EXPERTS
    {
        return Err(format!(
            "{} is {experts}, more than any model has ({MAX_EXPERTS})",
            key("expert_count")
        ));
    }
    for name in [
        "attention.head_count",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
        "rope.dimension_count",
    ] {
        if let Some(Ok(n)) = declared(name)
            && n as usize > width
        {
            return Err(format!(
                "{} is {n}, more than the model's width {width}",
                key(name)
            ));
        }
    }
    Ok(())
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("architecture", &self.architecture)
            .field("sha256", &self.sha256)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl GgufModel {
    /// Loads a GGUF model and its tokenizer from `path` with the default [`LoadOptions`].
    pub fn load(path: &Path) -> Result<Self, InferenceError> {
        Self::load_with(path, LoadOptions::default())
    }

    /// Loads a GGUF model and its tokenizer from `path`.
    pub fn load_with(path: &Path, options: LoadOptions) -> Result<Self, InferenceError> {
        let io = |source| InferenceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let malformed = |reason| InferenceError::Model {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io)?;
        let sha256 = crate::artifacts::to_hex(&hasher.finalize());
        file.rewind().map_err(io)?;
        let file_size = file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        file.rewind().map_err(io)?;
        let content = third_party("reading the GGUF header", || {
            gguf_file::Content::read(&mut file)
        })
        .and_then(|read| read.map_err(|e| reason(&e)))
        .map_err(malformed)?;
        check_tensor_table(&content, file_size).map_err(malformed)?;
        let named = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| InferenceError::Model {
                path: path.to_path_buf(),
                reason: "the metadata has no general.architecture".into(),
            })?;
        let architecture = Architecture::from_name(&named).ok_or_else(|| {
            InferenceError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture: named.clone(),
            }
        })?;
        let tokenizer =
            tokenizer::from_gguf(&content).map_err(|reason| InferenceError::Tokenizer {
                path: path.to_path_buf(),
                reason,
            })?;
        let name = content
            .metadata
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let metadata_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
        let end_of_text = metadata_u32("tokenizer.ggml.eos_token_id");
        let end_of_turn = metadata_u32("tokenizer.ggml.eot_token_id");
        let beginning_of_text = metadata_u32("tokenizer.ggml.bos_token_id");
        let token_text = |id: Option<u32>| {
            id.and_then(|id| self::tokenizer::token_text(&content.metadata, id))
                .unwrap_or_default()
        };
        let chat = match content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
        {
            Some(source) => chat::ChatTemplate::new(
                source,
                &token_text(beginning_of_text),
                &token_text(end_of_text),
            )
            .map_err(|e| format!("the model's chat template does not compile: {e}")),
            None => Err(
                "the model has no chat template (tokenizer.chat_template): send a prompt".into(),
            ),
        };
        let context_key = format!("{}.context_length", architecture.name());
        let context =
            metadata_u32(&context_key).map_or(MAX_CONTEXT, |c| (c as usize).min(MAX_CONTEXT));
        // candle sizes rotary tables, and Phi-3 its attention caches, by the declared
        // context: tables for 128K positions are computed and kept whole, and a 128K Phi-3
        // reserves ~100 GB of cache per generation. No generation here goes past `context`,
        // so neither do they. (candle's Gemma 3 ignores the key: 128K positions always.)
        let mut content = content;
        content
            .metadata
            .insert(context_key, gguf_file::Value::U32(context as u32));
        let vocab_size = content
            .tensor_infos
            .get("token_embd.weight")
            .and_then(|info| info.shape.dims().first().copied())
            .unwrap_or(0)
            .max(tokenizer.get_vocab_size(true));
        let requantizing = options.requantize_slow_weights;
        let tiled =
            options.batch_generations && super::batching::LlamaBatch::takes(architecture, &content);
        let weight_bytes: u64 = content
            .tensor_infos
            .values()
            .map(|info| {
                let dtype = if requantizing && requantize::slow_on_cpu(info.ggml_dtype, tiled) {
                    candle_core::quantized::GgmlDType::Q8_0
                } else {
                    info.ggml_dtype
                };
                let blocks = (info.shape.elem_count() / dtype.block_size()) as u64;
                // Tiled Q8_0 keeps its scales as f32: 2 more bytes per block (Q4_1 stays
                // as stored).
                let widened = tiled && dtype == candle_core::quantized::GgmlDType::Q8_0;
                blocks * (dtype.type_size() as u64 + if widened { 2 } else { 0 })
            })
            .sum();
        let arch_u32 = |key: &str| {
            content
                .metadata
                .get(&format!("{}.{key}", architecture.name()))
                .and_then(|v| v.to_u32().ok())
        };
        let cache_bytes = match (
            arch_u32("block_count"),
            arch_u32("embedding_length"),
            arch_u32("attention.head_count"),
        ) {
            (Some(layers), Some(width), Some(heads)) if heads > 0 => {
                let kv_heads = arch_u32("attention.head_count_kv").unwrap_or(heads);
                let head_dim = arch_u32("attention.key_length").unwrap_or(width / heads);
                // Keys and values: f16 in the batched llama's caches, f32 in candle's.
                let value_bytes = if tiled { 2 } else { 4 };
                [layers, kv_heads, head_dim]
                    .into_iter()
                    .fold(2 * value_bytes * context as u64, |b, n| {
                        b.saturating_mul(u64::from(n))
                    })
            }
            _ => 0,
        };
        check_dimensions(&content, architecture).map_err(malformed)?;
        let requantized = if options.requantize_slow_weights {
            third_party("requantizing the weights", || {
                requantize::to_q8_0(&content, &mut file, tiled)
            })
            .and_then(|done| done.map_err(|e| reason(&e)))
            .map_err(malformed)?
        } else {
            None
        };
        let batching = options.batch_generations.then_some(context);
        let (weights, requantized_tensors) = match requantized {
            Some((content, mut memory, count)) => (
                load_weights(path, architecture, content, &mut memory, batching)?,
                count,
            ),
            None => (
                load_weights(path, architecture, content, &mut file, batching)?,
                0,
            ),
        };
        Ok(Self {
            architecture,
            name,
            weights,
            tokenizer,
            end_of_text,
            end_of_turn,
            beginning_of_text,
            chat,
            context,
            sha256,
            requantized_tensors,
            weight_bytes,
            cache_bytes,
            vocab_size,
            grammar: std::sync::OnceLock::new(),
            turns: parking_lot::FairMutex::new(()),
        })
    }

    /// Memory in MiB one generation at full context needs: the weights as loaded plus the
    /// attention caches (what [`LABEL_MODEL_MEMORY_MIB`] announces).
    pub fn memory_needed_mib(&self) -> u64 {
        (self.weight_bytes + self.cache_bytes).div_ceil(1024 * 1024)
    }

    /// Whether this model's generations share forward passes (see
    /// [`LoadOptions::batch_generations`]; `llama` models only).
    pub fn batches_generations(&self) -> bool {
        matches!(self.weights, Weights::LlamaBatched(_))
    }

    /// How a batched model's projections multiply, e.g. "murmur-matmul AvxVnni: 210 Q4_1,
    /// 1 Q8_0"; `None` for a model that does not batch its generations.
    pub fn projections(&self) -> Option<&str> {
        match &self.weights {
            Weights::LlamaBatched(batcher) => Some(batcher.projections()),
            _ => None,
        }
    }

    /// How many forward passes so far held how many generations (empty when the model
    /// does not batch them).
    pub fn passes_by_size(&self) -> std::collections::BTreeMap<usize, u64> {
        match &self.weights {
            Weights::LlamaBatched(batcher) => batcher.passes_by_size(),
            _ => Default::default(),
        }
    }

    /// How many weight tensors were requantized to Q8_0 at load.
    pub fn requantized_tensors(&self) -> usize {
        self.requantized_tensors
    }

    /// SHA-256 of the model file, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The model's architecture.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The model's name (`general.name`), when the file has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The labels an agent serving this model carries, so a task can ask for a model
    /// (`--label model_sha256=…`): `architecture`, `model_sha256`, `model_memory_mib` and,
    /// when the file names it, `model`.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::from([
            (
                LABEL_ARCHITECTURE.to_string(),
                self.architecture.name().to_string(),
            ),
            (LABEL_MODEL_SHA256.to_string(), self.sha256.clone()),
            (
                LABEL_MODEL_MEMORY_MIB.to_string(),
                self.memory_needed_mib().to_string(),
            ),
        ]);
        if let Some(name) = &self.name {
            labels.insert(LABEL_MODEL.to_string(), name.clone());
        }
        labels
    }

    /// The context length generation is held to (the model's, at most 4096).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The token ids `text` encodes to as a prompt (with the beginning-of-sequence token
    /// where the vocabulary asks for one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        let mut ids = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| InferenceError::Compute(format!("encoding the prompt: {e}")))?
            .get_ids()
            .to_vec();
        // A text that starts with the beginning-of-sequence token (chat templates write it)
        // would get a second one: keep one, as llama.cpp does.
        if ids.len() >= 2
            && self
                .beginning_of_text
                .is_some_and(|b| ids[0] == b && ids[1] == b)
        {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// The prompt for a conversation: `messages` rendered through the model's chat
    /// template, ending where the assistant's answer starts.
    pub fn chat_prompt(&self, messages: &[chat::ChatMessage]) -> Result<String, InferenceError> {
        if messages.is_empty() {
            return Err(InferenceError::Chat(
                "the conversation has no message".into(),
            ));
        }
        let template = self
            .chat
            .as_ref()
            .map_err(|e| InferenceError::Chat(e.clone()))?;
        template.render(messages).map_err(InferenceError::Chat)
    }

    /// Whether the model carries a chat template that compiles.
    pub fn has_chat_template(&self) -> bool {
        self.chat.is_ok()
    }

    /// The text of `tokens`, special tokens left out.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, InferenceError> {
        self.tokenizer
            .decode(tokens, true)
            .map_err(|e| InferenceError::Compute(format!("decoding: {e}")))
    }

    /// Generates after `prompt` as `options` say. CPU-bound: call it from a blocking thread
    /// in async code.
    pub fn generate(
        &self,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<Generation, InferenceError> {
        self.generate_streaming(prompt, options, &mut |_| {})
    }

    /// [`generate`](Self::generate), calling `on_token` with the tokens generated so far
    /// after each one.
    pub fn generate_streaming(
        &self,
        prompt: &str,
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(&[u32]),
    ) -> Result<Generation, InferenceError> {
        self.generate_constrained(prompt, options, None, on_token)
    }

    /// Generates a JSON document `schema` accepts after `prompt`: at each step only the
    /// tokens that keep the output a prefix of such a document may be chosen (llguidance's
    /// token masks). The generation's `text` is the document; it is complete when the
    /// generation stopped at the end of text ([`StopReason::EndOfText`]), cut short when
    /// `max_tokens` ran out first. Documents are written on one line as models usually
    /// write them (`{"key": value, "other": value}`), unless the schema carries its own
    /// llguidance options (`x-guidance`): flexible whitespace lets a small model pad forever.
    pub fn generate_json(
        &self,
        prompt: &str,
        options: &GenerateOptions,
        schema: &serde_json::Value,
        on_token: &mut dyn FnMut(&[u32]),
    ) -> Result<Generation, InferenceError> {
        let end = self
            .end_of_text
            .or(self.end_of_turn)
            .ok_or_else(|| InferenceError::Grammar("the model has no end-of-text token".into()))?;
        let vocabulary = self
            .grammar
            .get_or_init(|| grammar::GrammarVocabulary::new(&self.tokenizer, self.vocab_size, end))
            .as_ref()
            .map_err(|e| InferenceError::Grammar(format!("the model's vocabulary: {e}")))?;
        let mut schema = schema.clone();
        if let Some(fields) = schema.as_object_mut() {
            fields.entry("x-guidance").or_insert_with(|| {
                serde_json::json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": "
                })
            });
        }
        let mut matcher = vocabulary
            .matcher(&schema)
            .map_err(|e| InferenceError::Grammar(format!("the JSON Schema: {e}")))?;
        self.generate_constrained(prompt, options, Some(&mut matcher), on_token)
    }

    fn generate_constrained(
        &self,
        prompt: &str,
        options: &GenerateOptions,
        constraint: Option<&mut llguidance::Matcher>,
        on_token: &mut dyn FnMut(&[u32]),
    ) -> Result<Generation, InferenceError> {
        if prompt.is_empty() {
            return Err(InferenceError::EmptyPrompt);
        }
        let prompt_ids = self.encode(prompt)?;
        if prompt_ids.is_empty() {
            return Err(InferenceError::EmptyPrompt);
        }
        if prompt_ids.len() + options.max_tokens > self.context {
            return Err(InferenceError::TooLong {
                prompt_tokens: prompt_ids.len(),
                max_tokens: options.max_tokens,
                context: self.context,
            });
        }
        let (sampling, seed) = match options.decoding {
            Decoding::Greedy => (Sampling::ArgMax, None),
            Decoding::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            } => {
                let sampling = match (top_k, top_p) {
                    (None, None) => Sampling::All { temperature },
                    (Some(k), None) => Sampling::TopK { k, temperature },
                    (None, Some(p)) => Sampling::TopP { p, temperature },
                    (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
                };
                (sampling, Some(seed))
            }
        };
        let mut chooser = LogitsProcessor::from_sampling(seed.unwrap_or(0), sampling);
        let (tokens, stop) = self.with_fresh_cache(|weights| {
            self.decode_loop(
                weights,
                &prompt_ids,
                options,
                &mut chooser,
                constraint,
                on_token,
            )
        })?;
        Ok(Generation {
            text: self.decode(&tokens)?,
            tokens,
            prompt_tokens: prompt_ids.len(),
            stop,
            model_sha256: self.sha256.clone(),
            seed,
        })
    }

    /// The log-probability the model gives each of `continuations` right after `prompt`
    /// (summed over the continuation's tokens, natural log): how a model picks among fixed
    /// answers without sampling, as deterministic as greedy decoding. CPU-bound.
    ///
    /// Each continuation is encoded together with the prompt, since tokens may merge across
    /// the boundary; its tokens are those after the part both encodings share.
    pub fn score(&self, prompt: &str, continuations: &[&str]) -> Result<Vec<f64>, InferenceError> {
        let prompt_ids = self.encode(prompt)?;
        if prompt.is_empty() || prompt_ids.is_empty() {
            return Err(InferenceError::EmptyPrompt);
        }
        continuations
            .iter()
            .map(|continuation| {
                let ids = self.encode(&format!("{prompt}{continuation}"))?;
                let shared = prompt_ids
                    .iter()
                    .zip(&ids)
                    .take_while(|(a, b)| a == b)
                    .count();
                if shared == 0 || shared == ids.len() {
                    return Err(InferenceError::NothingToScore {
                        continuation: continuation.to_string(),
                    });
                }
                if ids.len() > self.context {
                    return Err(InferenceError::TooLong {
                        prompt_tokens: shared,
                        max_tokens: ids.len() - shared,
                        context: self.context,
                    });
                }
                self.with_fresh_cache(|weights| log_probability(weights, &ids, shared))
            })
            .collect()
    }

    /// Runs `generate` on weights with empty attention caches whose passes take turns with
    /// this model's other generations.
    pub(super) fn with_fresh_cache<T>(&self, generate: impl FnOnce(&mut dyn Forward) -> T) -> T {
        self.weights.with_fresh_cache(&self.turns, generate)
    }

    fn decode_loop(
        &self,
        weights: &mut dyn Forward,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        chooser: &mut LogitsProcessor,
        mut constraint: Option<&mut llguidance::Matcher>,
        on_token: &mut dyn FnMut(&[u32]),
    ) -> Result<(Vec<u32>, StopReason), InferenceError> {
        let grammar = |e: String| InferenceError::Grammar(e);
        let compute = |e: candle_core::Error| InferenceError::Compute(reason(&e));
        let device = Device::Cpu;
        let penalty = options.repeat_penalty.filter(|p| *p != 1.0);
        let mut seen = prompt_ids.to_vec();
        let mut tokens = Vec::with_capacity(options.max_tokens);
        let mut input = prompt_ids.to_vec();
        let mut position = 0;
        while tokens.len() < options.max_tokens {
            let x = Tensor::new(input.as_slice(), &device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(compute)?;
            let mut logits = weights
                .forward(&x, position)
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.to_dtype(candle_core::DType::F32))
                .map_err(compute)?;
            position += input.len();
            if let Some(penalty) = penalty {
                let recent = &seen[seen.len().saturating_sub(REPEAT_LAST_N)..];
                logits = candle_transformers::utils::apply_repeat_penalty(&logits, penalty, recent)
                    .map_err(compute)?;
            }
            if let Some(matcher) = constraint.as_deref_mut() {
                let allowed = matcher.compute_mask().map_err(|e| grammar(e.to_string()))?;
                if allowed.is_zero() {
                    return Err(grammar(
                        "no token of the model's vocabulary continues a document the schema accepts"
                            .into(),
                    ));
                }
                let mut masked: Vec<f32> = logits.to_vec1().map_err(compute)?;
                for (token, logit) in masked.iter_mut().enumerate() {
                    if token >= allowed.len() || !allowed.is_allowed(token as u32) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
                logits = Tensor::new(masked, &device).map_err(compute)?;
            }
            let next = chooser.sample(&logits).map_err(compute)?;
            if Some(next) == self.end_of_text || Some(next) == self.end_of_turn {
                return Ok((tokens, StopReason::EndOfText));
            }
            if let Some(matcher) = constraint.as_deref_mut() {
                matcher
                    .consume_token(next)
                    .map_err(|e| grammar(e.to_string()))?;
                if matcher.is_stopped() {
                    tokens.push(next);
                    on_token(&tokens);
                    return Ok((tokens, StopReason::EndOfText));
                }
            }
            tokens.push(next);
            on_token(&tokens);
            seen.push(next);
            input = vec![next];
        }
        Ok((tokens, StopReason::MaxTokens))
    }
}

/// The log-probability of `ids[given..]` after `ids[..given]`.
pub(super) fn log_probability(
    weights: &mut dyn Forward,
    ids: &[u32],
    given: usize,
) -> Result<f64, InferenceError> {
    let compute = |e: candle_core::Error| InferenceError::Compute(reason(&e));
    let mut total = 0.0;
    let mut position = 0;
    let mut input = &ids[..given];
    for &next in &ids[given..] {
        let x = Tensor::new(input, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(compute)?;
        let logits: Vec<f32> = weights
            .forward(&x, position)
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_dtype(candle_core::DType::F32))
            .and_then(|l| l.to_vec1())
            .map_err(compute)?;
        position += input.len();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|l| (*l as f64 - max).exp()).sum();
        let chosen = *logits.get(next as usize).ok_or_else(|| {
            InferenceError::Compute(format!("token {next} is outside the logits"))
        })?;
        total += chosen as f64 - max - sum.ln();
        input = std::slice::from_ref(&ids[position]);
    }
    Ok(total)
}
