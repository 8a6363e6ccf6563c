//! Inference: GGUF language models run on the CPU with candle, and the handler an
//! `inference` agent runs for `llm.generate` tasks. Behind the `inference` feature, so a
//! build without it does not compile candle.
//!
//! - **Models** ([`Architecture`]): `llama` (Llama 1–3, TinyLlama, Mistral …), `qwen2`
//!   (Qwen 2 and 2.5), `qwen3`, `phi3` (Phi-3, Phi-3.5) and `gemma3`, as llama.cpp writes
//!   them, in any quantization candle reads
//!   (F32, F16, Q4_0 … Q8_K). Nothing is downloaded: the operator names a file.
//! - **Tokenizer**: the model's own, from its GGUF metadata: byte-level BPE (`gpt2`) or
//!   SentencePiece (`llama`), see [`tokenizer`].
//! - **Decoding** ([`Decoding`]): greedy by default (the most likely token at each step), so
//!   the same model and prompt give the same tokens on every run. A request may ask for
//!   sampling (temperature, top-k, top-p); its seed defaults to one derived from the task id,
//!   so a retried attempt still gives the same answer, and the seed used is in the output.
//! - [`write_test_model`] writes tiny models with seeded random weights in every supported
//!   architecture and vocabulary kind: what tests and the demo run, since nothing fetches
//!   weights at run time.

mod architecture;
pub mod chat;
mod test_model;
pub mod tokenizer;

use std::io::Seek;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

pub use architecture::Architecture;
use architecture::{Forward, Weights};
pub use test_model::{
    CHATML_TEMPLATE, INSTRUCT_TEMPLATE, TEST_CONTEXT, TestModel, TestVocabulary, write_test_model,
};

use crate::worker::{Handler, PROGRESS_INTERVAL, TaskContext};

/// Longest context this module runs, whatever a model declares: bounds the attention caches
/// (candle's llama precomputes rotary tables for this many positions).
const MAX_CONTEXT: usize = 4096;

/// Label of an inference agent: its model's architecture.
pub const LABEL_ARCHITECTURE: &str = "architecture";
/// Label of an inference agent: its model file's SHA-256, hex.
pub const LABEL_MODEL_SHA256: &str = "model_sha256";
/// Label of an inference agent: its model's name (`general.name`).
pub const LABEL_MODEL: &str = "model";

/// How many of the latest tokens a repeat penalty looks back on (llama.cpp's default).
pub const REPEAT_LAST_N: usize = 64;

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
    /// Not a GGUF file, or not a model candle can run.
    #[error("model {path} is not a usable GGUF model: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What candle reported.
        reason: String,
    },
    /// The GGUF names an architecture this module does not run.
    #[error(
        "model {path} has architecture `{architecture}`; this build runs {}",
        Architecture::names()
    )]
    UnsupportedArchitecture {
        /// The model file.
        path: PathBuf,
        /// Its `general.architecture`.
        architecture: String,
    },
    /// The GGUF metadata holds no tokenizer this module can build.
    #[error("model {path} has no usable tokenizer: {reason}")]
    Tokenizer {
        /// The model file.
        path: PathBuf,
        /// What was missing or unsupported.
        reason: String,
    },
    /// The prompt is empty or encodes to no token.
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
    /// A conversation the model's chat template cannot render (or the model has none).
    #[error("chat: {0}")]
    Chat(String),
    /// A continuation to score adds no token of its own after the prompt.
    #[error("the answer {continuation:?} adds no token after the prompt")]
    NothingToScore {
        /// The continuation.
        continuation: String,
    },
    /// A tensor operation failed while generating.
    #[error("generation failed: {0}")]
    Compute(String),
}

/// What a candle error says, without the backtrace candle appends when `RUST_BACKTRACE` is
/// set: these reasons end up in task failures and in the log.
fn reason(error: &candle_core::Error) -> String {
    match error {
        candle_core::Error::WithBacktrace { inner, .. } => reason(inner),
        candle_core::Error::Context { inner, context } => format!("{context}: {}", reason(inner)),
        other => other.to_string(),
    }
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
    architecture: Architecture,
    name: Option<String>,
    weights: Weights,
    tokenizer: Tokenizer,
    end_of_text: Option<u32>,
    /// The chat models' end of an answer, where it is not the end of text (Llama 3's
    /// `<|eot_id|>`): generation stops at either.
    end_of_turn: Option<u32>,
    beginning_of_text: Option<u32>,
    /// The chat template, or why there is none.
    chat: Result<chat::ChatTemplate, String>,
    context: usize,
    sha256: String,
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
    /// Loads a GGUF model and its tokenizer from `path`.
    pub fn load(path: &Path) -> Result<Self, InferenceError> {
        let io = |source| InferenceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let model = |e: candle_core::Error| InferenceError::Model {
            path: path.to_path_buf(),
            reason: reason(&e),
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io)?;
        let sha256 = crate::artifacts::to_hex(&hasher.finalize());
        file.rewind().map_err(io)?;
        let content = gguf_file::Content::read(&mut file).map_err(model)?;
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
        let weights = Weights::load(architecture, content, &mut file).map_err(model)?;
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
        })
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
    /// (`--label model_sha256=…`): `architecture`, `model_sha256` and, when the file names
    /// it, `model`.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::from([
            (
                LABEL_ARCHITECTURE.to_string(),
                self.architecture.name().to_string(),
            ),
            (LABEL_MODEL_SHA256.to_string(), self.sha256.clone()),
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
        let (tokens, stop) = self.weights.with_fresh_cache(|weights| {
            self.decode_loop(weights, &prompt_ids, options, &mut chooser, on_token)
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
                self.weights
                    .with_fresh_cache(|weights| log_probability(weights, &ids, shared))
            })
            .collect()
    }

    fn decode_loop(
        &self,
        weights: &mut dyn Forward,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        chooser: &mut LogitsProcessor,
        on_token: &mut dyn FnMut(&[u32]),
    ) -> Result<(Vec<u32>, StopReason), InferenceError> {
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
            let next = chooser.sample(&logits).map_err(compute)?;
            if Some(next) == self.end_of_text || Some(next) == self.end_of_turn {
                return Ok((tokens, StopReason::EndOfText));
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
fn log_probability(
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

/// What an `llm.generate` task asks for (its input): a `prompt`, or a conversation
/// (`messages`) that the model's chat template turns into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The prompt, as the model reads it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    /// A conversation instead of a prompt, rendered with the model's chat template (the
    /// answer is the assistant's next message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<chat::ChatMessage>,
    /// Most tokens to generate (at most [`MAX_TOKENS_PER_TASK`]).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Sampling temperature; absent or 0: greedy decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Sample among this many of the most likely tokens (needs a temperature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities reach this (needs a
    /// temperature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed; absent: derived from the task id, so retries sample the same tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// See [`GenerateOptions::repeat_penalty`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
}

fn default_max_tokens() -> usize {
    32
}

/// Most tokens one task may ask for: a bound on one attempt's CPU time.
pub const MAX_TOKENS_PER_TASK: usize = 1024;

impl GenerateRequest {
    /// A greedy request for up to `max_tokens` tokens.
    pub fn new(prompt: impl Into<String>, max_tokens: usize) -> Self {
        Self {
            prompt: prompt.into(),
            messages: Vec::new(),
            max_tokens,
            temperature: None,
            top_k: None,
            top_p: None,
            seed: None,
            repeat_penalty: None,
        }
    }

    /// A greedy request to answer a conversation with up to `max_tokens` tokens.
    pub fn chat(messages: Vec<chat::ChatMessage>, max_tokens: usize) -> Self {
        Self {
            messages,
            ..Self::new("", max_tokens)
        }
    }

    /// The prompt `model` is to continue: the prompt, or the conversation rendered with the
    /// model's chat template.
    pub fn prompt_for(&self, model: &GgufModel) -> Result<String, String> {
        match (self.prompt.is_empty(), self.messages.is_empty()) {
            (false, true) => Ok(self.prompt.clone()),
            (true, false) => model.chat_prompt(&self.messages).map_err(|e| e.to_string()),
            (false, false) => Err("give a prompt or messages, not both".into()),
            (true, true) => Err("give a prompt or messages".into()),
        }
    }

    /// The options this request asks for, checked; `task` seeds sampling when the request
    /// names no seed. The error says what is wrong, for the task's failure reason.
    pub fn options(&self, task: &str) -> Result<GenerateOptions, String> {
        if self.max_tokens > MAX_TOKENS_PER_TASK {
            return Err(format!(
                "max_tokens {} is above the limit of {MAX_TOKENS_PER_TASK}",
                self.max_tokens
            ));
        }
        if let Some(p) = self.repeat_penalty
            && !(p.is_finite() && p > 0.0)
        {
            return Err(format!("repeat_penalty must be above 0, not {p}"));
        }
        let temperature = match self.temperature {
            None => 0.0,
            Some(t) if t.is_finite() && t >= 0.0 => t,
            Some(t) => return Err(format!("temperature must be 0 or more, not {t}")),
        };
        if temperature == 0.0 {
            if self.top_k.is_some() || self.top_p.is_some() || self.seed.is_some() {
                return Err(
                    "top_k, top_p and seed apply to sampling: give a temperature above 0".into(),
                );
            }
            return Ok(GenerateOptions {
                max_tokens: self.max_tokens,
                decoding: Decoding::Greedy,
                repeat_penalty: self.repeat_penalty,
            });
        }
        if self.top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(format!("top_p must be above 0 and at most 1, not {p}"));
        }
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            decoding: Decoding::Sample {
                temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed.unwrap_or_else(|| seed_of(task)),
            },
            repeat_penalty: self.repeat_penalty,
        })
    }
}

/// The default sampling seed of a task: the first 8 bytes of SHA-256 of its id.
pub fn seed_of(task: &str) -> u64 {
    let digest = Sha256::digest(task.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The capability of generating text ([`GenerateRequest`]).
pub const GENERATE_CAPABILITY: &str = "llm.generate";

/// The capability of scoring fixed answers ([`ScoreRequest`]).
pub const SCORE_CAPABILITY: &str = "llm.score";

/// The most answers one `llm.score` task may ask about.
pub const MAX_CHOICES: usize = 64;

/// What an `llm.score` task asks: how likely the model finds each of `choices` right after
/// the prompt (or the conversation, rendered with the model's chat template). A
/// classification or a vote without sampling, as [`GgufModel::score`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// The prompt, as the model reads it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    /// A conversation instead of a prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<chat::ChatMessage>,
    /// The answers to score, as they would follow the prompt (mind the leading space).
    pub choices: Vec<String>,
}

/// What an `llm.score` task answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Each choice's log-probability (natural log, summed over its tokens), in order.
    pub scores: Vec<f64>,
    /// The index of the most likely choice (the first of equals).
    pub best: usize,
    /// The most likely choice.
    pub choice: String,
    /// SHA-256 of the model file.
    pub model_sha256: String,
}

impl ScoreRequest {
    /// The scores `model` gives, or why the request cannot be answered.
    pub fn answer(&self, model: &GgufModel) -> Result<Scores, String> {
        if self.choices.is_empty() || self.choices.len() > MAX_CHOICES {
            return Err(format!(
                "choices must hold 1 to {MAX_CHOICES} answers, not {}",
                self.choices.len()
            ));
        }
        let prompt = GenerateRequest {
            prompt: self.prompt.clone(),
            messages: self.messages.clone(),
            ..GenerateRequest::new("", 0)
        }
        .prompt_for(model)?;
        let choices: Vec<&str> = self.choices.iter().map(String::as_str).collect();
        let scores = model.score(&prompt, &choices).map_err(|e| e.to_string())?;
        let best = scores
            .iter()
            .enumerate()
            .fold(0, |best, (i, s)| if *s > scores[best] { i } else { best });
        Ok(Scores {
            best,
            choice: self.choices[best].clone(),
            scores,
            model_sha256: model.sha256().to_string(),
        })
    }
}

/// The worker handler of an inference agent. A task that asked for [`SCORE_CAPABILITY`]
/// decodes its input as a [`ScoreRequest`] and gets [`Scores`]; any other (`llm.generate`)
/// decodes its input as a
/// [`GenerateRequest`], generates on a blocking thread, reports the text so far as the
/// attempt's progress (`murmur task watch` streams it) and returns the [`Generation`]. A
/// malformed input or a prompt that does not fit fails the attempt with the reason. With
/// `metrics` (the agent's), each generation adds its tokens and time to the agent's counters
/// (`$SRV.STATS`, `murmur status`, the Prometheus endpoint).
pub fn generate_handler(
    model: Arc<GgufModel>,
    metrics: Option<Arc<crate::metrics::AgentMetrics>>,
) -> Handler {
    if let Some(metrics) = &metrics {
        metrics.count_generations();
    }
    crate::worker::handler(move |ctx: TaskContext| {
        let model = model.clone();
        let metrics = metrics.clone();
        async move {
            if ctx.capability == SCORE_CAPABILITY {
                let request: ScoreRequest = serde_json::from_value(ctx.input).map_err(|e| {
                    format!(
                        "an llm.score task takes {{\"prompt\": text or \"messages\": [...], \"choices\": [text, ...]}}: {e}"
                    )
                })?;
                let scores = tokio::task::spawn_blocking(move || request.answer(&model))
                    .await
                    .map_err(|e| format!("the scoring thread failed: {e}"))??;
                return serde_json::to_value(scores).map_err(|e| e.to_string());
            }
            let request: GenerateRequest = serde_json::from_value(ctx.input).map_err(|e| {
                format!(
                    "an llm.generate task takes {{\"prompt\": text or \"messages\": [{{\"role\", \"content\"}}], \"max_tokens\": n, \"temperature\", \"top_k\", \"top_p\", \"seed\", \"repeat_penalty\" (optional)}}: {e}"
                )
            })?;
            let options = request.options(&ctx.task)?;
            let prompt = request.prompt_for(&model)?;
            let progress = ctx.progress;
            let generation = tokio::task::spawn_blocking(move || {
                // The text so far, decoded at most every half progress interval: the
                // reporter publishes only the latest anyway.
                let mut decoded_at: Option<std::time::Instant> = None;
                let total = options.max_tokens as u64;
                let started = std::time::Instant::now();
                let generation = model.generate_streaming(&prompt, &options, &mut |tokens| {
                    if decoded_at.is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL / 2) {
                        return;
                    }
                    decoded_at = Some(std::time::Instant::now());
                    let text = model.decode(tokens).unwrap_or_default();
                    progress.report(Some(tokens.len() as u64), Some(total), Some(text));
                });
                if let (Ok(done), Some(metrics)) = (&generation, &metrics) {
                    metrics.generation_done(
                        done.prompt_tokens as u64,
                        done.tokens.len() as u64,
                        started.elapsed().as_secs_f64(),
                    );
                }
                // The last report is the whole text, whatever the throttle skipped.
                if let Ok(done) = &generation {
                    progress.report(
                        Some(done.tokens.len() as u64),
                        Some(total),
                        Some(done.text.clone()),
                    );
                }
                generation
            })
            .await
            .map_err(|e| format!("the generation thread failed: {e}"))?
            .map_err(|e| e.to_string())?;
            serde_json::to_value(generation).map_err(|e| e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Value;

    fn write(dir: &Path, name: &str, model: TestModel) -> PathBuf {
        let path = dir.join(name);
        write_test_model(&path, &model).expect("written");
        path
    }

    #[test]
    fn every_architecture_and_vocabulary_loads_and_generates_the_same_tokens_every_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        for architecture in Architecture::ALL {
            for vocabulary in TestVocabulary::ALL {
                let spec = TestModel::new(7)
                    .architecture(architecture)
                    .vocabulary(vocabulary);
                let case = format!("{architecture} {}", vocabulary.name());
                let path = write(dir.path(), "tiny.gguf", spec);
                let model = GgufModel::load(&path).expect(&case);
                assert_eq!(model.architecture(), architecture);
                assert_eq!(model.context(), TEST_CONTEXT);
                let options = GenerateOptions::greedy(12);
                let a = model.generate("hello murmur", &options).expect(&case);
                let b = model.generate("hello murmur", &options).expect(&case);
                assert_eq!(a, b, "{case}: greedy decoding is deterministic");
                assert!(
                    a.stop == StopReason::EndOfText || a.tokens.len() == 12,
                    "{case}: {a:?}"
                );
                assert_eq!(a.seed, None);
                assert_eq!(a.model_sha256.len(), 64);
                // Another seed is another model: another answer, another hash.
                let other = write(dir.path(), "other.gguf", TestModel { seed: 8, ..spec });
                let other = GgufModel::load(&other).expect(&case);
                let c = other.generate("hello murmur", &options).expect(&case);
                assert_ne!(c.model_sha256, a.model_sha256, "{case}");
                assert_ne!(c.tokens, a.tokens, "{case}");
                // The same description writes the same file.
                let again = write(dir.path(), "again.gguf", spec);
                assert_eq!(
                    std::fs::read(&again).expect("read"),
                    std::fs::read(&path).expect("read"),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn scores_are_log_probabilities_and_the_greedy_token_scores_highest() {
        let dir = tempfile::tempdir().expect("tempdir");
        for architecture in Architecture::ALL {
            let spec = TestModel::new(5)
                .architecture(architecture)
                .vocabulary(TestVocabulary::SentencePiece);
            let model = GgufModel::load(&write(dir.path(), "m.gguf", spec)).expect("loads");
            let prompt = model.encode("hello world").expect("encodes");
            let vocabulary = model.tokenizer.get_vocab_size(true) as u32;
            let scores: Vec<f64> = (0..vocabulary)
                .map(|next| {
                    let ids = [prompt.as_slice(), &[next]].concat();
                    model
                        .weights
                        .with_fresh_cache(|w| log_probability(w, &ids, prompt.len()))
                        .expect("scores")
                })
                .collect();
            let total: f64 = scores.iter().map(|s| s.exp()).sum();
            assert!((total - 1.0).abs() < 1e-3, "{architecture}: {total}");
            let best = (0..vocabulary)
                .max_by(|a, b| scores[*a as usize].total_cmp(&scores[*b as usize]))
                .expect("a vocabulary");
            let greedy = model
                .generate("hello world", &GenerateOptions::greedy(1))
                .expect("generates");
            let expected = greedy.tokens.first().copied().or(model.end_of_text);
            assert_eq!(Some(best), expected, "{architecture}: {greedy:?}");
        }
    }

    #[test]
    fn a_continuation_scores_as_its_tokens_one_after_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Byte-level without merges: a character is one token, and the prompt's tokens stay
        // as they are when a character follows.
        let model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(2))).expect("loads");
        let both = model.score("vote:", &["ab", "ba"]).expect("scores");
        let a = model.score("vote:", &["a"]).expect("scores")[0];
        let b_after_a = model.score("vote:a", &["b"]).expect("scores")[0];
        assert!(
            (both[0] - (a + b_after_a)).abs() < 1e-4,
            "{both:?} {a} {b_after_a}"
        );
        assert_ne!(both[0], both[1]);
        assert!(both.iter().all(|s| s.is_finite() && *s < 0.0));
        assert_eq!(model.score("vote:", &["ab"]).expect("scores")[0], both[0]);
        assert!(matches!(
            model.score("vote:", &[""]),
            Err(InferenceError::NothingToScore { .. })
        ));
        assert!(matches!(
            model.score("", &["a"]),
            Err(InferenceError::EmptyPrompt)
        ));
    }

    #[test]
    fn a_conversation_goes_through_the_models_chat_template_and_special_tokens() {
        use chat::ChatMessage;
        let dir = tempfile::tempdir().expect("tempdir");
        let conversation = vec![ChatMessage::new("user", " hello ")];

        // ChatML: the markers are one control token each, not their bytes.
        let model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(4))).expect("loads");
        assert!(model.has_chat_template());
        let prompt = model.chat_prompt(&conversation).expect("renders");
        assert_eq!(
            prompt,
            "<|im_start|>user\n hello <|im_end|>\n<|im_start|>assistant\n"
        );
        let ids = model.encode(&prompt).expect("encodes");
        let im_start = model
            .tokenizer
            .token_to_id("<|im_start|>")
            .expect("in the vocabulary");
        assert_eq!(
            ids.iter().filter(|id| **id == im_start).count(),
            2,
            "{ids:?}"
        );
        assert_eq!(ids.len(), 3 + "user\n hello \nassistant\n".len(), "{ids:?}");
        let request = GenerateRequest::chat(conversation.clone(), 6);
        let answer = model
            .generate(
                &request.prompt_for(&model).expect("a prompt"),
                &request.options("t").expect("options"),
            )
            .expect("generates");
        assert_eq!(
            answer,
            model
                .generate(&prompt, &GenerateOptions::greedy(6))
                .expect("generates")
        );

        // Llama 2's template writes `<s>` itself: the prompt still starts with one.
        let spec = TestModel::new(4).vocabulary(TestVocabulary::SentencePiece);
        let model = GgufModel::load(&write(dir.path(), "sp.gguf", spec)).expect("loads");
        let prompt = model.chat_prompt(&conversation).expect("renders");
        assert_eq!(prompt, "<s>[INST] hello [/INST]");
        let ids = model.encode(&prompt).expect("encodes");
        assert_eq!(ids[0], 1, "{ids:?}");
        assert_ne!(ids[1], 1, "one beginning-of-sequence token: {ids:?}");

        // A request names a prompt or a conversation.
        let both = GenerateRequest {
            messages: conversation,
            ..GenerateRequest::new("hi", 4)
        };
        assert!(both.prompt_for(&model).is_err());
        assert!(GenerateRequest::new("", 4).prompt_for(&model).is_err());
        assert!(matches!(
            model.chat_prompt(&[]),
            Err(InferenceError::Chat(_))
        ));
        let parsed: GenerateRequest = serde_json::from_value(
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
        )
        .expect("parses");
        assert_eq!(
            parsed.prompt_for(&model).expect("renders"),
            "<s>[INST] hi [/INST]"
        );
    }

    #[test]
    fn generation_stops_at_the_end_of_a_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(6))).expect("loads");
        assert_eq!(model.end_of_turn, model.tokenizer.token_to_id("<|im_end|>"));
        let options = GenerateOptions::greedy(8);
        let free = model.generate("hello", &options).expect("generates");
        assert!(free.tokens.len() >= 3, "{free:?}");
        // Were the third token the end of a turn, the answer would stop before it.
        model.end_of_turn = Some(free.tokens[2]);
        let stopped = model.generate("hello", &options).expect("generates");
        let first_end = free
            .tokens
            .iter()
            .position(|t| *t == free.tokens[2])
            .unwrap_or(2);
        assert_eq!(stopped.tokens, free.tokens[..first_end]);
        assert_eq!(stopped.stop, StopReason::EndOfText);
    }

    #[test]
    fn a_score_request_answers_with_the_most_likely_choice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(11))).expect("loads");
        let request: ScoreRequest = serde_json::from_value(
            serde_json::json!({"prompt": "Ship it?", "choices": [" yes", " no", " later"]}),
        )
        .expect("parses");
        let answer = request.answer(&model).expect("scores");
        let expected = model
            .score("Ship it?", &[" yes", " no", " later"])
            .expect("scores");
        assert_eq!(answer.scores, expected);
        let best = (0..3)
            .max_by(|a, b| expected[*a].total_cmp(&expected[*b]))
            .expect("three");
        assert_eq!(
            (answer.best, answer.choice.as_str()),
            (best, request.choices[best].as_str())
        );
        let none = ScoreRequest {
            choices: vec![],
            ..request.clone()
        };
        assert!(none.answer(&model).is_err());
        let chat: ScoreRequest = serde_json::from_value(serde_json::json!({
            "messages": [{"role": "user", "content": "Ship it?"}],
            "choices": ["yes", "no"],
        }))
        .expect("parses");
        let rendered = model.chat_prompt(&chat.messages).expect("renders");
        assert_eq!(
            chat.answer(&model).expect("scores").scores,
            model.score(&rendered, &["yes", "no"]).expect("scores")
        );
    }

    #[test]
    fn a_model_declaring_a_long_context_is_held_to_the_longest_this_module_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        for architecture in Architecture::ALL {
            let spec = TestModel::new(3)
                .architecture(architecture)
                .context(131_072);
            let model = GgufModel::load(&write(dir.path(), "long.gguf", spec)).expect("loads");
            assert_eq!(model.context(), MAX_CONTEXT, "{architecture}");
            let answer = model
                .generate("hello", &GenerateOptions::greedy(4))
                .expect("generates");
            assert_eq!(answer.tokens.len(), 4, "{architecture}: {answer:?}");
            assert!(matches!(
                model.generate("hello", &GenerateOptions::greedy(MAX_CONTEXT)),
                Err(InferenceError::TooLong {
                    context: MAX_CONTEXT,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_byte_level_vocabulary_without_merges_gives_one_token_per_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(1))).expect("loads");
        // GPT-2's pre-tokenizer puts no space in front of the text.
        assert_eq!(
            model.encode("hello murmur").expect("encodes").len(),
            "hello murmur".len()
        );
        let ids = model.encode("héllo").expect("encodes");
        assert_eq!(model.decode(&ids).expect("decodes"), "héllo");
    }

    #[test]
    fn a_sentencepiece_vocabulary_merges_by_score_and_falls_back_to_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = TestModel::new(1).vocabulary(TestVocabulary::SentencePiece);
        let model = GgufModel::load(&write(dir.path(), "m.gguf", spec)).expect("loads");
        let id = |piece: &str| {
            model
                .tokenizer
                .token_to_id(piece)
                .unwrap_or_else(|| panic!("{piece} is in the vocabulary"))
        };
        // `<s>` first; each word merged into its piece; the leading `▁` added.
        assert_eq!(
            model.encode("hello world").expect("encodes"),
            vec![1, id("▁hello"), id("▁world")]
        );
        // `é` is no piece: its two UTF-8 bytes; `llo` still merges.
        assert_eq!(
            model.encode("héllo").expect("encodes"),
            vec![1, id("▁h"), id("<0xC3>"), id("<0xA9>"), id("llo")]
        );
        // Letters without a merge stay letters.
        assert_eq!(
            model.encode("ox").expect("encodes"),
            vec![1, id("▁"), id("o"), id("x")]
        );
        // Decoding turns `▁` back into spaces and byte pieces into their characters, and
        // leaves out `<s>`; the continuation keeps its leading space.
        for text in ["hello world", "héllo wörld"] {
            let ids = model.encode(text).expect("encodes");
            assert_eq!(model.decode(&ids).expect("decodes"), format!(" {text}"));
        }
    }

    #[test]
    fn sampling_is_reproducible_from_its_seed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(3))).expect("loads");
        let sampled = |seed: u64| {
            let options = GenerateOptions {
                max_tokens: 16,
                decoding: Decoding::Sample {
                    temperature: 2.0,
                    top_k: None,
                    top_p: None,
                    seed,
                },
                repeat_penalty: None,
            };
            model.generate("hello", &options).expect("generates")
        };
        let a = sampled(11);
        assert_eq!(a, sampled(11), "the same seed samples the same tokens");
        assert_eq!(a.seed, Some(11));
        let greedy = model
            .generate("hello", &GenerateOptions::greedy(16))
            .expect("generates");
        assert!(
            (12..20).map(sampled).any(|other| other.tokens != a.tokens),
            "other seeds sample other tokens"
        );
        assert_ne!(
            a.tokens, greedy.tokens,
            "sampling at temperature 2 is not greedy"
        );
        // Top-k 1 is greedy whatever the seed.
        let top1 = GenerateOptions {
            max_tokens: 16,
            decoding: Decoding::Sample {
                temperature: 1.0,
                top_k: Some(1),
                top_p: None,
                seed: 5,
            },
            repeat_penalty: None,
        };
        assert_eq!(
            model.generate("hello", &top1).expect("generates").tokens,
            greedy.tokens
        );
    }

    #[test]
    fn a_repeat_penalty_steers_away_from_recent_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model =
            GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(5))).expect("loads");
        let prompt = "abcabc";
        let plain = model
            .generate(prompt, &GenerateOptions::greedy(24))
            .expect("generates");
        let penalized = model
            .generate(
                prompt,
                &GenerateOptions {
                    repeat_penalty: Some(1000.0),
                    ..GenerateOptions::greedy(24)
                },
            )
            .expect("generates");
        let repeats = |g: &Generation| {
            let mut seen = std::collections::HashSet::new();
            g.tokens.iter().filter(|t| !seen.insert(**t)).count()
        };
        assert!(
            repeats(&plain) > 0,
            "greedy noise repeats itself: {plain:?}"
        );
        assert_eq!(repeats(&penalized), 0, "{penalized:?}");
    }

    #[test]
    fn requests_are_checked_and_seeded_from_the_task() {
        let request = |json: serde_json::Value| -> GenerateRequest {
            serde_json::from_value(json).expect("a request")
        };
        let greedy = request(serde_json::json!({"prompt": "hi"}))
            .options("t1")
            .expect("valid");
        assert_eq!(greedy, GenerateOptions::greedy(32));
        let sampled =
            request(serde_json::json!({"prompt": "hi", "temperature": 0.7, "top_p": 0.9}))
                .options("t1")
                .expect("valid");
        assert_eq!(
            sampled.decoding,
            Decoding::Sample {
                temperature: 0.7,
                top_k: None,
                top_p: Some(0.9),
                seed: seed_of("t1")
            }
        );
        assert_ne!(seed_of("t1"), seed_of("t2"));
        let explicit = request(serde_json::json!({"prompt": "hi", "temperature": 1, "seed": 9}))
            .options("t1")
            .expect("valid");
        assert!(matches!(
            explicit.decoding,
            Decoding::Sample { seed: 9, .. }
        ));
        for (bad, says) in [
            (
                serde_json::json!({"prompt": "hi", "max_tokens": 5000}),
                "max_tokens",
            ),
            (
                serde_json::json!({"prompt": "hi", "temperature": -1}),
                "temperature",
            ),
            (
                serde_json::json!({"prompt": "hi", "seed": 3}),
                "give a temperature",
            ),
            (
                serde_json::json!({"prompt": "hi", "temperature": 1, "top_p": 1.5}),
                "top_p",
            ),
            (
                serde_json::json!({"prompt": "hi", "temperature": 1, "top_k": 0}),
                "top_k",
            ),
            (
                serde_json::json!({"prompt": "hi", "repeat_penalty": 0}),
                "repeat_penalty",
            ),
        ] {
            let error = request(bad.clone()).options("t1").expect_err("refused");
            assert!(error.contains(says), "{bad}: {error}");
        }
        // A misspelt option is an error, not silently greedy.
        assert!(
            serde_json::from_value::<GenerateRequest>(
                serde_json::json!({"prompt": "hi", "temprature": 1})
            )
            .is_err()
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
        let metadata_only = |name: &str, metadata: &[(&str, Value)]| {
            let path = dir.path().join(name);
            let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
            let mut file = std::fs::File::create(&path).expect("create");
            gguf_file::write(&mut file, &metadata, &[]).expect("write");
            GgufModel::load(&path)
        };
        let falcon = metadata_only(
            "falcon.gguf",
            &[("general.architecture", Value::String("falcon".into()))],
        );
        assert!(
            matches!(&falcon, Err(InferenceError::UnsupportedArchitecture { architecture, .. }) if architecture == "falcon"),
            "{falcon:?}"
        );
        let bert = metadata_only(
            "bert-vocab.gguf",
            &[
                ("general.architecture", Value::String("llama".into())),
                ("tokenizer.ggml.model", Value::String("bert".into())),
            ],
        );
        assert!(
            matches!(&bert, Err(InferenceError::Tokenizer { reason, .. }) if reason.contains("`bert`")),
            "{bert:?}"
        );

        let model =
            GgufModel::load(&write(dir.path(), "tiny.gguf", TestModel::new(1))).expect("loads");
        assert!(matches!(
            model.generate("", &GenerateOptions::greedy(4)),
            Err(InferenceError::EmptyPrompt)
        ));
        let long = "x".repeat(500);
        assert!(matches!(
            model.generate(&long, &GenerateOptions::greedy(100)),
            Err(InferenceError::TooLong { context: 512, .. })
        ));
    }
}
