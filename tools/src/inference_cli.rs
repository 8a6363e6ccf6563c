//! `murmur inference ...`: write test models, and run a model here without NATS.

use anyhow::Result;

use crate::cli::{InferenceCommand, Settings};

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
            let request = GenerateRequest {
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
                let generation = model.generate(&prompt, &options);
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
                "{} model ({} context), loaded in {:.2} s; {} prompt tokens, {} generated ({:?}) in {:.2} s: {:.1} tokens/s{}",
                model.architecture(),
                model.context(),
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
