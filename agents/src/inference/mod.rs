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
//! - **Concurrency**: generations of one loaded `llama` model share each forward pass
//!   (continuous batching, [`LoadOptions::batch_generations`]); those of other
//!   architectures take turns pass by pass.
//! - [`write_test_model`] writes tiny models with seeded random weights in every supported
//!   architecture and vocabulary kind: what tests and the demo run, since nothing fetches
//!   weights at run time.

mod architecture;
mod attention;
mod batching;
pub mod chat;
pub mod embed;
mod grammar;
mod model;
mod requantize;
mod task;
mod test_model;
#[cfg(test)]
mod tests;
pub mod tokenizer;

use std::path::PathBuf;

use architecture::{Forward, Weights};

pub use architecture::Architecture;
pub use model::{Decoding, GenerateOptions, Generation, GgufModel, LoadOptions, StopReason};
pub use task::{
    GENERATE_CAPABILITY, GenerateRequest, MAX_CHOICES, MAX_TOKENS_PER_TASK, SCORE_CAPABILITY,
    ScoreRequest, Scores, constrained_document, generate_handler, seed_of,
};
pub use test_model::{
    CHATML_TEMPLATE, INSTRUCT_TEMPLATE, TEST_CONTEXT, TestModel, TestVocabulary, write_test_model,
};

/// Longest context this module runs, whatever a model declares: bounds the attention caches
/// (candle's llama precomputes rotary tables for this many positions).
const MAX_CONTEXT: usize = 4096;

/// Label of an inference agent: its model's architecture.
pub const LABEL_ARCHITECTURE: &str = "architecture";
/// Label of an inference agent: its model file's SHA-256, hex.
pub const LABEL_MODEL_SHA256: &str = "model_sha256";
/// Label of an inference agent: its model's name (`general.name`).
pub const LABEL_MODEL: &str = "model";
/// Label of the memory, in MiB, one generation at full context needs on this agent: the
/// weights as loaded plus the attention caches (f32 keys and values, every layer).
pub const LABEL_MODEL_MEMORY_MIB: &str = "model_memory_mib";

/// How many of the latest tokens a repeat penalty looks back on (llama.cpp's default).
pub const REPEAT_LAST_N: usize = 64;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A JSON Schema the grammar engine cannot follow, or a vocabulary it cannot read.
    #[error("constrained decoding: {0}")]
    Grammar(String),
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
