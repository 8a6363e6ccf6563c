use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::quantized::gguf_file::Value;

use super::model::*;
use super::task::*;
use super::*;

/// Generations of a `llama` model on candle's model, taking turns.
fn unbatched() -> LoadOptions {
    LoadOptions {
        batch_generations: false,
        ..LoadOptions::default()
    }
}

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
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(2))).expect("loads");
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
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(4))).expect("loads");
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
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(11))).expect("loads");
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
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(1))).expect("loads");
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
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(3))).expect("loads");
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
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(5))).expect("loads");
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
    let sampled = request(serde_json::json!({"prompt": "hi", "temperature": 0.7, "top_p": 0.9}))
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
    // candle's reader divides by the declared alignment: a panic there is an error here.
    let zero_alignment = metadata_only(
        "zero-alignment.gguf",
        &[
            ("general.architecture", Value::String("llama".into())),
            ("general.alignment", Value::U32(0)),
        ],
    );
    assert!(
        matches!(&zero_alignment, Err(InferenceError::Model { reason, .. }) if reason.contains("malformed")),
        "{zero_alignment:?}"
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

    let model = GgufModel::load(&write(dir.path(), "tiny.gguf", TestModel::new(1))).expect("loads");
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

#[test]
fn weights_without_fast_kernels_are_requantized_to_q8_0_and_score_nearly_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "q4_1.gguf",
        TestModel::new(9).q4_1_projections(),
    );
    let stored = GgufModel::load_with(
        &path,
        LoadOptions {
            requantize_slow_weights: false,
            ..LoadOptions::default()
        },
    )
    .expect("loads as stored");
    // candle's llama (batching off) multiplies Q4_1 with a scalar loop: requantized.
    let fast = GgufModel::load_with(&path, unbatched()).expect("loads requantized");
    assert_eq!(stored.requantized_tensors(), 0);
    // 2 layers × the feed-forward down projection (rows of 64).
    assert_eq!(fast.requantized_tensors(), 2);
    assert_eq!(fast.sha256(), stored.sha256(), "the hash is the file's");
    // The batched llama multiplies Q4_1 as stored where murmur_matmul has a kernel.
    let tiled = GgufModel::load(&path).expect("loads batched");
    let tiles = murmur_matmul::multiplies(candle_core::quantized::GgmlDType::Q4_1);
    assert_eq!(tiled.requantized_tensors(), if tiles { 0 } else { 2 });
    let choices = ["a", "b", "hello"];
    let a = stored.score("hello murmur", &choices).expect("scores");
    for model in [&fast, &tiled] {
        let b = model.score("hello murmur", &choices).expect("scores");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() < 0.01 * x.abs().max(1.0),
                "as stored {a:?}, loaded for speed {b:?}"
            );
        }
    }
    // A model already in fast types is loaded as it is.
    let f32 = GgufModel::load(&write(dir.path(), "f32.gguf", TestModel::new(9))).expect("loads");
    assert_eq!(f32.requantized_tensors(), 0);
}

#[test]
fn token_bytes_are_what_each_token_decodes_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    for vocabulary in TestVocabulary::ALL {
        let model = GgufModel::load(&write(
            dir.path(),
            "m.gguf",
            TestModel::new(3).vocabulary(vocabulary),
        ))
        .expect("loads");
        let bytes = grammar::token_bytes(&model.tokenizer);
        let mut checked = 0;
        for (id, token) in bytes.iter().enumerate() {
            if token.first() == Some(&toktrie::TokTrie::SPECIAL_TOKEN_MARKER) || token.is_empty() {
                continue;
            }
            let Ok(text) = std::str::from_utf8(token) else {
                continue;
            };
            // SentencePiece drops the space the text starts with when decoding.
            let decoded = model.decode(&[id as u32]).expect("decodes");
            assert!(
                text == decoded || text.strip_prefix(' ') == Some(decoded.as_str()),
                "{}: token {id}: {text:?} vs {decoded:?}",
                vocabulary.name()
            );
            checked += 1;
        }
        assert!(checked > 100, "{}: {checked}", vocabulary.name());
    }
}

#[test]
fn a_json_schema_constrains_even_a_random_model_to_documents_it_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "tool": {"enum": ["fs.read", "fs.list"]},
            "path": {"type": "string", "maxLength": 6}
        },
        "required": ["tool", "path"],
        "additionalProperties": false
    });
    for vocabulary in TestVocabulary::ALL {
        for seed in [1, 2, 3] {
            let case = format!("{} seed {seed}", vocabulary.name());
            let model = GgufModel::load(&write(
                dir.path(),
                "m.gguf",
                TestModel::new(seed).vocabulary(vocabulary),
            ))
            .expect("loads");
            let free = model
                .generate("call a tool:", &GenerateOptions::greedy(40))
                .expect(&case);
            assert!(
                serde_json::from_str::<serde_json::Value>(&free.text).is_err(),
                "{case}: unconstrained, the random model writes noise: {:?}",
                free.text
            );
            let generation = model
                .generate_json(
                    "call a tool:",
                    &GenerateOptions::greedy(200),
                    &schema,
                    &mut |_| {},
                )
                .expect(&case);
            let document = constrained_document(&generation, 200).expect(&case);
            let tool = document["tool"].as_str().expect("a tool");
            assert!(["fs.read", "fs.list"].contains(&tool), "{case}: {document}");
            let path = document["path"].as_str().expect("a path");
            assert!(path.chars().count() <= 6, "{case}: {document}");
            assert_eq!(document.as_object().map(|o| o.len()), Some(2), "{case}");
        }
    }
    // A schema the engine cannot follow is a typed error, not a panic.
    let model = GgufModel::load(&write(dir.path(), "m.gguf", TestModel::new(1))).expect("loads");
    let refused = model.generate_json(
        "x",
        &GenerateOptions::greedy(4),
        &serde_json::json!({"type": "no such type"}),
        &mut |_| {},
    );
    assert!(
        matches!(refused, Err(InferenceError::Grammar(_))),
        "{refused:?}"
    );
}

/// A tiny model rewritten with one metadata entry changed, tensors as they were.
fn with_metadata(dir: &Path, name: &str, key: &str, value: Value) -> PathBuf {
    rewritten(dir, name, key, value, None)
}

/// A tiny model rewritten with one metadata entry changed and `extra` tensor added.
fn rewritten(
    dir: &Path,
    name: &str,
    key: &str,
    value: Value,
    extra: Option<(&str, candle_core::quantized::QTensor)>,
) -> PathBuf {
    let source = write(dir, "source.gguf", TestModel::new(3));
    let mut file = std::fs::File::open(&source).expect("open");
    let content = gguf_file::Content::read(&mut file).expect("reads");
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(&str, candle_core::quantized::QTensor)> = names
        .iter()
        .map(|n| {
            let t = content
                .tensor(&mut file, n, &candle_core::Device::Cpu)
                .expect("tensor");
            (n.as_str(), t)
        })
        .collect();
    let mut metadata: std::collections::BTreeMap<&str, &Value> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    metadata.insert(key, &value);
    let metadata: Vec<(&str, &Value)> = metadata.into_iter().collect();
    let mut tensor_refs: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(n, t)| (*n, t)).collect();
    if let Some((n, t)) = &extra {
        tensor_refs.push((n, t));
    }
    let path = dir.join(name);
    let mut out = std::fs::File::create(&path).expect("create");
    gguf_file::write(&mut out, &metadata, &tensor_refs).expect("written");
    path
}

#[test]
fn sizes_a_file_declares_beyond_its_tensors_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Found by the fuzzer: each made candle ask for terabytes and abort the process.
    for (key, value, says) in [
        (
            "llama.rope.dimension_count",
            Value::U32(2_000_000_000),
            "more than the model's width",
        ),
        (
            "llama.block_count",
            Value::U32(2_000_000_000),
            "no tensors for block",
        ),
        ("llama.embedding_length", Value::U32(64), "wide"),
    ] {
        let path = with_metadata(dir.path(), "bad.gguf", key, value);
        let refused = GgufModel::load(&path);
        assert!(
            matches!(&refused, Err(InferenceError::Model { reason, .. }) if reason.contains(says)),
            "{key}: {refused:?}"
        );
    }
    // Found by the fuzzer too: candle reads an empty tensor through a misaligned pointer.
    let empty = candle_core::quantized::QTensor::quantize(
        &candle_core::Tensor::zeros((0, 32), candle_core::DType::F32, &candle_core::Device::Cpu)
            .expect("an empty tensor"),
        candle_core::quantized::GgmlDType::F32,
    )
    .expect("quantized");
    let path = rewritten(
        dir.path(),
        "empty.gguf",
        "llama.block_count",
        Value::U32(2),
        Some(("blk.0.extra.weight", empty)),
    );
    let refused = GgufModel::load(&path);
    assert!(
        matches!(&refused, Err(InferenceError::Model { reason, .. }) if reason.contains("no elements")),
        "{refused:?}"
    );
    // The same rewrite with a true value loads.
    let path = with_metadata(dir.path(), "ok.gguf", "llama.block_count", Value::U32(2));
    GgufModel::load(&path).expect("an honest file loads");
}

#[test]
fn generations_side_by_side_take_turns_pass_by_pass_not_one_whole_generation_after_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = TestModel::new(7).architecture(Architecture::Llama);
    // Batching off: the passes of candle's model take turns.
    let model =
        GgufModel::load_with(&write(dir.path(), "m.gguf", spec), unbatched()).expect("loads");
    assert!(!model.batches_generations());
    let model = std::sync::Arc::new(model);
    let options = GenerateOptions::greedy(12);
    assert!(
        !model
            .generate("hello murmur", &options)
            .expect("generates")
            .tokens
            .is_empty(),
        "the test needs a generation of at least one token"
    );
    // Each generation, at its first token, tells the other and waits to hear from it: both
    // get there only if neither holds the model for its whole generation.
    let (to_b, from_a) = std::sync::mpsc::channel::<()>();
    let (to_a, from_b) = std::sync::mpsc::channel::<()>();
    let run = |model: std::sync::Arc<GgufModel>,
               tell: std::sync::mpsc::Sender<()>,
               hear: std::sync::mpsc::Receiver<()>| {
        std::thread::spawn(move || {
            let mut met = None;
            model
                .generate_streaming("hello murmur", &options, &mut |tokens| {
                    if tokens.len() == 1 {
                        let _ = tell.send(());
                        met = Some(
                            hear.recv_timeout(std::time::Duration::from_secs(60))
                                .is_ok(),
                        );
                    }
                })
                .expect("generates");
            met
        })
    };
    let a = run(model.clone(), to_b, from_b);
    let b = run(model, to_a, from_a);
    assert_eq!(
        a.join().expect("a"),
        Some(true),
        "generation a met b mid-way"
    );
    assert_eq!(
        b.join().expect("b"),
        Some(true),
        "generation b met a mid-way"
    );
}

/// Four greedy generations side by side on `batched` (their passes shared) give each the
/// tokens it gives alone on the same model, one generation at a time: a pass computes each
/// row as it would alone.
fn side_by_side_equals_alone(batched: &GgufModel, prompts: &[&str], tokens: usize) {
    let options = GenerateOptions::greedy(tokens);
    let expected: Vec<Generation> = prompts
        .iter()
        .map(|prompt| batched.generate(prompt, &options).expect("generates alone"))
        .collect();
    // Each generation waits at its first token until all have one, so the passes after
    // that hold several sequences at once.
    let barrier = std::sync::Barrier::new(prompts.len());
    let side_by_side: Vec<Generation> = std::thread::scope(|scope| {
        let running: Vec<_> = prompts
            .iter()
            .map(|prompt| {
                let barrier = &barrier;
                scope.spawn(move || {
                    batched
                        .generate_streaming(prompt, &options, &mut |so_far| {
                            if so_far.len() == 1 {
                                barrier.wait();
                            }
                        })
                        .expect("generates side by side")
                })
            })
            .collect();
        running
            .into_iter()
            .map(|g| g.join().expect("joins"))
            .collect()
    });
    for ((prompt, alone), together) in prompts.iter().zip(&expected).zip(&side_by_side) {
        assert_eq!(alone.tokens, together.tokens, "{prompt:?}");
        assert_eq!(alone.text, together.text, "{prompt:?}");
    }
    let passes = batched.passes_by_size();
    assert!(
        passes.keys().any(|&size| size > 1),
        "some passes held several generations: {passes:?}"
    );
}

/// Scores of the same continuations on two models, at most `tolerance` apart (in nats).
fn scores_agree(model: &GgufModel, reference: &GgufModel, prompt: &str, tolerance: f64) {
    let continuations = ["a", " murmur", "b c", " Paris", " a city"];
    let ours = model.score(prompt, &continuations).expect("scores");
    let theirs = reference.score(prompt, &continuations).expect("scores");
    for ((ours, theirs), continuation) in ours.iter().zip(&theirs).zip(continuations) {
        assert!(
            (ours - theirs).abs() <= tolerance,
            "{continuation:?}: {ours} against {theirs}"
        );
    }
}

/// The test prompts of the small generated models.
const TEST_PROMPTS: [&str; 4] = [
    "hello murmur",
    "a b c d e f g",
    "x",
    "murmur murmur hello a b",
];

#[test]
fn batched_llama_generations_give_the_tokens_each_gives_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    for vocabulary in TestVocabulary::ALL {
        let spec = TestModel::new(11)
            .architecture(Architecture::Llama)
            .vocabulary(vocabulary);
        let path = write(dir.path(), "llama.gguf", spec);
        let batched = GgufModel::load(&path).expect("loads");
        assert!(batched.batches_generations(), "llama batches by default");
        let alone = GgufModel::load_with(&path, unbatched()).expect("loads");
        assert!(!alone.batches_generations());
        side_by_side_equals_alone(&batched, &TEST_PROMPTS, 16);
        // candle's llama on the same F32 weights: the same logits but for rounding, most of
        // it the f16 attention caches' (0.0067 at most when measured; 7.9e-6 with f32
        // caches; a wrong rotation or head is off by whole units), the same greedy choices
        // wherever candle's best leads by 0.02, scores 0.005 apart at most when measured.
        let (worst, chose_otherwise) = follows(&batched, &alone, &TEST_PROMPTS, 64, 0.02);
        assert!(worst <= 0.02, "a logit {worst} off candle's");
        assert!(chose_otherwise.is_empty(), "{chose_otherwise:?}");
        scores_agree(&batched, &alone, "hello", 0.02);
    }
}

/// candle's llama on the weights as stored (no requantization, no batching).
fn candle_as_stored(path: &Path) -> GgufModel {
    GgufModel::load_with(
        path,
        LoadOptions {
            requantize_slow_weights: false,
            ..unbatched()
        },
    )
    .expect("loads")
}

#[test]
fn batched_llama_caches_grow_past_their_first_capacity_unchanged() {
    // Each layer's cache starts with room for 64 positions and doubles: a generation of
    // 200 tokens grows it twice, and must still follow candle's llama.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = TestModel::new(11).architecture(Architecture::Llama);
    let path = write(dir.path(), "llama.gguf", spec);
    let batched = GgufModel::load(&path).expect("loads");
    let alone = GgufModel::load_with(&path, unbatched()).expect("loads");
    let together = batched
        .generate("hello murmur", &GenerateOptions::greedy(200))
        .expect("generates");
    assert!(
        together.prompt_tokens + together.tokens.len() > 128,
        "the cache grew twice: {} positions",
        together.prompt_tokens + together.tokens.len()
    );
    let (worst, chose_otherwise) = follows(&batched, &alone, &["hello murmur"], 200, 0.02);
    assert!(worst <= 0.02, "a logit {worst} off candle's");
    assert!(chose_otherwise.is_empty(), "{chose_otherwise:?}");
}

#[test]
fn batched_llama_with_q4_1_weights_follows_candles_llama() {
    // The feed-forward down projections are Q4_1, which the batched llama multiplies as
    // stored with murmur_matmul's tiles where this CPU has them (bit for bit candle's scalar
    // Q4_1 product).
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = TestModel::new(11)
        .architecture(Architecture::Llama)
        .q4_1_projections();
    let path = write(dir.path(), "llama-q4_1.gguf", spec);
    let batched = GgufModel::load(&path).expect("loads");
    if murmur_matmul::multiplies(candle_core::quantized::GgmlDType::Q4_1) {
        let projections = batched.projections().expect("batched");
        assert!(projections.contains("2 Q4_1"), "{projections}");
    }
    side_by_side_equals_alone(&batched, &TEST_PROMPTS, 16);
    // Activations are rounded to 8 bits before each Q4_1 product, so the f16 caches'
    // rounding of an attention output can move a rounding step: 0.085 at most when measured
    // (0.0033 with f32 caches); scores 0.040 apart at most.
    let candle = candle_as_stored(&path);
    let (worst, chose_otherwise) = follows(&batched, &candle, &TEST_PROMPTS, 64, 0.25);
    assert!(worst <= 0.25, "a logit {worst} off candle's");
    assert!(chose_otherwise.is_empty(), "{chose_otherwise:?}");
    scores_agree(&batched, &candle, "hello", 0.1);
}

#[test]
fn batched_smollm2_generations_give_the_tokens_each_gives_alone_and_follow_candles_llama() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        assert!(
            std::env::var("MURMUR_SKIP_MODELS").as_deref() == Ok("1"),
            "{} is missing: run `bash scripts/install.sh` (it installs the models unless MURMUR_SKIP_MODELS=1)",
            path.display()
        );
        return;
    }
    // SmolLM2's layers are Q4_1: the batched llama multiplies them as stored, candle's
    // llama too when it does not requantize them.
    let batched = GgufModel::load(&path).expect("loads");
    if murmur_matmul::multiplies(candle_core::quantized::GgmlDType::Q4_1) {
        let projections = batched.projections().expect("batched");
        assert!(projections.contains("210 Q4_1"), "{projections}");
    }
    let candle = candle_as_stored(&path);
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "def fibonacci(n):",
        "The three primary colours are",
    ];
    side_by_side_equals_alone(&batched, &prompts, 24);
    // Along candle's own greedy generations (64 tokens each), the logits differ by 1.40 at
    // most when measured (1.58 with f32 caches): activations are rounded to 8 bits before
    // each product, and a difference in the last bit of one attention output moves some of
    // those roundings. Wherever candle's best token leads by half a logit, both choose it.
    let (worst, chose_otherwise) = follows(&batched, &candle, &prompts, 64, 0.5);
    assert!(worst <= 3.0, "a logit {worst} off candle's");
    assert!(chose_otherwise.is_empty(), "{chose_otherwise:?}");
    // Scores of several tokens read logits after one-token steps: 0.47 apart at most when
    // measured with the f16 caches (0.12 with f32 caches).
    scores_agree(&batched, &candle, "The capital of France is", 1.0);
}

/// Each step's logits as `model` computes them along `tokens`: the prompt's pass, then one
/// token at a time, as a generation feeds them.
fn logits_along(model: &GgufModel, prompt: &str, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut input = model.encode(prompt).expect("encodes");
    model.with_fresh_cache(|weights| {
        let mut position = 0;
        let mut steps = Vec::new();
        for next in tokens.iter().copied().map(Some).chain([None]) {
            let x = candle_core::Tensor::new(input.as_slice(), &candle_core::Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("input");
            let logits: Vec<f32> = weights
                .forward(&x, position)
                .and_then(|l| l.flatten_all())
                .and_then(|l| l.to_dtype(candle_core::DType::F32))
                .and_then(|l| l.to_vec1())
                .expect("forward");
            steps.push(logits);
            position += input.len();
            match next {
                Some(token) => input = vec![token],
                None => break,
            }
        }
        steps
    })
}

/// How closely `model` follows `reference` along the reference's own greedy generations of
/// `tokens` tokens from each prompt, fed to both step by step: the largest difference of a
/// logit at any step, and the steps at which the two would choose different tokens although
/// the reference's best two logits are at least `margin` apart.
fn follows(
    model: &GgufModel,
    reference: &GgufModel,
    prompts: &[&str],
    tokens: usize,
    margin: f32,
) -> (f32, Vec<String>) {
    let argmax = |logits: &[f32]| {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(token, _)| token)
    };
    let mut worst = 0f32;
    let mut chose_otherwise = Vec::new();
    for prompt in prompts {
        let generated = reference
            .generate(prompt, &GenerateOptions::greedy(tokens))
            .expect("generates")
            .tokens;
        let theirs = logits_along(reference, prompt, &generated);
        let ours = logits_along(model, prompt, &generated);
        for (step, (theirs, ours)) in theirs.iter().zip(&ours).enumerate() {
            let difference = theirs
                .iter()
                .zip(ours)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(difference);
            let mut best = theirs.clone();
            best.sort_by(|a, b| b.total_cmp(a));
            if best[0] - best[1] >= margin && argmax(theirs) != argmax(ours) {
                chose_otherwise.push(format!("{prompt:?} step {step}"));
            }
        }
    }
    (worst, chose_otherwise)
}
