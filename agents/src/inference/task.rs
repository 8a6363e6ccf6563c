//! `llm.generate` and `llm.score` tasks: their requests, bounds and seeds, and the worker handler that runs them on a blocking thread.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;
use crate::worker::{Handler, PROGRESS_INTERVAL, TaskContext};

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
    /// A JSON Schema the answer must satisfy: decoding is constrained to documents it
    /// accepts ([`GgufModel::generate_json`]) and the output carries the parsed document as
    /// `json`. A document cut short by `max_tokens` fails the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
}

pub(super) fn default_max_tokens() -> usize {
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
            json_schema: None,
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
/// malformed input or a prompt that does not fit fails the attempt with the reason. Each
/// generation adds its tokens and time to the running agent's counters
/// ([`TaskContext::metrics`]: `$SRV.STATS`, `murmur status`, the Prometheus endpoint).
pub fn generate_handler(model: Arc<GgufModel>) -> Handler {
    crate::worker::handler(move |ctx: TaskContext| {
        let model = model.clone();
        let metrics = ctx.metrics.clone();
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
                    "an llm.generate task takes {{\"prompt\": text or \"messages\": [{{\"role\", \"content\"}}], \"max_tokens\": n, \"temperature\", \"top_k\", \"top_p\", \"seed\", \"repeat_penalty\", \"json_schema\" (optional)}}: {e}"
                )
            })?;
            let options = request.options(&ctx.task)?;
            let prompt = request.prompt_for(&model)?;
            let progress = ctx.progress;
            let schema = request.json_schema.clone();
            let generation = tokio::task::spawn_blocking(move || {
                // The text so far, decoded at most every half progress interval: the
                // reporter publishes only the latest anyway.
                let mut decoded_at: Option<std::time::Instant> = None;
                let total = options.max_tokens as u64;
                let started = std::time::Instant::now();
                let mut report = |tokens: &[u32]| {
                    if decoded_at.is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL / 2) {
                        return;
                    }
                    decoded_at = Some(std::time::Instant::now());
                    let text = model.decode(tokens).unwrap_or_default();
                    progress.report(Some(tokens.len() as u64), Some(total), Some(text));
                };
                let generation = match &schema {
                    Some(schema) => model.generate_json(&prompt, &options, schema, &mut report),
                    None => model.generate_streaming(&prompt, &options, &mut report),
                };
                if let Ok(done) = &generation {
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
            let document = match &request.json_schema {
                Some(_) => Some(constrained_document(&generation, request.max_tokens)?),
                None => None,
            };
            let mut output = serde_json::to_value(generation).map_err(|e| e.to_string())?;
            if let (Some(document), Some(fields)) = (document, output.as_object_mut()) {
                fields.insert("json".into(), document);
            }
            Ok(output)
        }
    })
}

/// The document a constrained generation wrote, or why there is none: `max_tokens` ran
/// out before it was complete.
pub fn constrained_document(
    generation: &Generation,
    max_tokens: usize,
) -> Result<serde_json::Value, String> {
    if generation.stop == StopReason::MaxTokens {
        return Err(format!(
            "the answer did not complete a document the JSON Schema accepts within max_tokens {max_tokens}: {:?}",
            generation.text
        ));
    }
    serde_json::from_str(generation.text.trim()).map_err(|e| {
        format!(
            "the constrained answer is not JSON ({e}): {:?}",
            generation.text
        )
    })
}
