//! `murmur inference`: a tiny test model, and generating with a model here without NATS.

use anyhow::Result;
use clap::Subcommand;

use crate::settings::Settings;

/// `murmur inference ...`
#[derive(Debug, Subcommand)]
pub enum InferenceCommand {
    /// Write a tiny GGUF model with seeded random weights (it produces noise, not language):
    /// to try `agent run inference --model FILE` without downloading anything.
    TestModel {
        /// Where to write it.
        path: std::path::PathBuf,
        /// Seed of its weights (the same seed writes the same file).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Architecture: llama, qwen2, qwen3, phi3 or gemma3.
        #[arg(long, default_value = "llama")]
        architecture: String,
        /// Vocabulary: byte-level (`gpt2`, as Llama 3 and Qwen) or sentencepiece (`llama`,
        /// as Llama 2, TinyLlama and Mistral).
        #[arg(long, default_value = "byte-level")]
        vocabulary: String,
        /// The context length it declares (runs are held to at most 4096 whatever a model
        /// declares).
        #[arg(long, default_value_t = 512)]
        context: u32,
    },
    /// Run a model here, without NATS: the text on stdout, tokens and speed on stderr (with
    /// `--json`, the `llm.generate` task output). To check a model file before an agent
    /// serves it.
    Generate(GenerateArgs),
}

/// `murmur inference generate`: the options an `llm.generate` task takes.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The GGUF model file.
    #[arg(long, value_name = "GGUF")]
    pub model: std::path::PathBuf,
    /// The prompt (with `--chat`: the user's message).
    pub prompt: String,
    /// Treat PROMPT as a user's message in a conversation, rendered with the model's chat
    /// template (instruct and chat models answer in their format).
    #[arg(long)]
    pub chat: bool,
    /// With `--chat`: a system message before it.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample among this many of the most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities reach this.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sampling seed (default: derived from the prompt, so a run repeats).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Penalise the last 64 tokens (1: off).
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// Constrain the answer to JSON this JSON Schema accepts (the schema itself, or @FILE).
    #[arg(long, value_name = "SCHEMA")]
    pub json_schema: Option<String>,
}

/// Runs one `murmur inference` command.
#[cfg(feature = "inference")]
pub async fn run(settings: &Settings, command: InferenceCommand) -> Result<()> {
    use anyhow::{Context, anyhow};
    use murmur_agents::inference::{
        Architecture, GenerateRequest, GgufModel, TestModel, TestVocabulary, chat::ChatMessage,
        write_test_model,
    };

    match command {
        InferenceCommand::TestModel {
            path,
            seed,
            architecture,
            vocabulary,
            context,
        } => {
            let architecture: Architecture = architecture.parse().map_err(|e| anyhow!("{e}"))?;
            let vocabulary: TestVocabulary = vocabulary.parse().map_err(|e| anyhow!("{e}"))?;
            let model = TestModel::new(seed)
                .architecture(architecture)
                .vocabulary(vocabulary)
                .context(context as usize);
            write_test_model(&path, &model)?;
            out!("{}", path.display());
            Ok(())
        }
        InferenceCommand::Generate(args) => {
            let mut messages = Vec::new();
            if args.chat {
                if let Some(system) = &args.system {
                    messages.push(ChatMessage::new("system", system));
                }
                messages.push(ChatMessage::new("user", &args.prompt));
            }
            let json_schema = match &args.json_schema {
                None => None,
                Some(text) => {
                    let text = match text.strip_prefix('@') {
                        Some(file) => std::fs::read_to_string(file)
                            .with_context(|| format!("reading the JSON Schema {file}"))?,
                        None => text.clone(),
                    };
                    Some(
                        serde_json::from_str::<serde_json::Value>(&text)
                            .context("--json-schema is not JSON")?,
                    )
                }
            };
            let request = GenerateRequest {
                json_schema: json_schema.clone(),
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                seed: args.seed,
                repeat_penalty: args.repeat_penalty,
                ..if args.chat {
                    GenerateRequest::chat(messages, args.max_tokens)
                } else {
                    GenerateRequest::new(&args.prompt, args.max_tokens)
                }
            };
            // The prompt stands in for a task id: the same command samples the same tokens.
            let options = request.options(&args.prompt).map_err(|e| anyhow!("{e}"))?;
            let path = args.model.clone();
            let started = std::time::Instant::now();
            let model = tokio::task::spawn_blocking(move || GgufModel::load(&path)).await??;
            let loaded = started.elapsed();
            let started = std::time::Instant::now();
            let prompt = request
                .prompt_for(&model)
                .map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
            let (model, generation) = tokio::task::spawn_blocking(move || {
                let generation = match &json_schema {
                    Some(schema) => model.generate_json(&prompt, &options, schema, &mut |_| {}),
                    None => model.generate(&prompt, &options),
                };
                (model, generation)
            })
            .await?;
            let generation = generation.with_context(|| format!("{}", args.model.display()))?;
            let took = started.elapsed();
            if settings.json {
                out!("{}", serde_json::to_string(&generation)?);
            } else {
                out!("{}", generation.text);
            }
            eprintln!(
                "{} model ({} context{}), loaded in {:.2} s; {} prompt tokens, {} generated ({:?}) in {:.2} s: {:.1} tokens/s{}",
                model.architecture(),
                model.context(),
                match (model.requantized_tensors(), model.projections()) {
                    (0, None) => String::new(),
                    (0, Some(projections)) => format!(", projections: {projections}"),
                    (n, None) => format!(", {n} weight tensors requantized to Q8_0"),
                    (n, Some(projections)) => format!(
                        ", {n} weight tensors requantized to Q8_0, projections: {projections}"
                    ),
                },
                loaded.as_secs_f64(),
                generation.prompt_tokens,
                generation.tokens.len(),
                generation.stop,
                took.as_secs_f64(),
                generation.tokens.len() as f64 / took.as_secs_f64().max(1e-9),
                generation
                    .seed
                    .map(|s| format!(", seed {s}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// Runs one `murmur inference` command: this build has no inference.
#[cfg(not(feature = "inference"))]
pub async fn run(_settings: &Settings, _command: InferenceCommand) -> Result<()> {
    anyhow::bail!("this murmur was built without the `inference` feature")
}
