//! A model's tokenizer, built from its GGUF metadata (`tokenizer.ggml.*`).
//!
//! GGUF files carry one of two kinds of vocabulary (`tokenizer.ggml.model`):
//! - `gpt2`: byte-level BPE with its merges (Llama 3, Qwen, GPT-2 …). candle's
//!   `TokenizerFromGguf` builds it, with two corrections toward llama.cpp, which wrote the
//!   files: its name for Llama 3's pre-tokenizer, `llama-bpe`, is read as candle's `llama3`
//!   (candle would fall back to GPT-2's), and GPT-2's own pre-tokenizer puts no space in
//!   front of the text (candle's does, in front of every piece between special tokens).
//! - `llama`: SentencePiece pieces with scores and no merges (Llama 2, TinyLlama, Mistral …).
//!   [`sentencepiece`] builds the equivalent BPE as Hugging Face's converter and llama.cpp
//!   do: merging two pieces is allowed when the result is a piece, and higher-scored results
//!   merge first; characters outside the vocabulary fall back to the `<0xNN>` byte pieces;
//!   spaces are `▁` and the text gets one in front.
//!
//! Other kinds are refused with the reason.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Sequence as NormalizerSequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// SentencePiece's stand-in for a space.
pub const SPACE: &str = "\u{2581}";

/// Token types llama.cpp writes in `tokenizer.ggml.token_type`.
mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
}

/// Builds the tokenizer the metadata describes, or says why it cannot.
pub fn from_gguf(content: &Content) -> Result<Tokenizer, String> {
    let kind = content
        .metadata
        .get("tokenizer.ggml.model")
        .ok_or("the metadata has no tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| format!("tokenizer.ggml.model: {}", super::reason(&e)))?
        .to_lowercase();
    match kind.as_str() {
        "gpt2" => byte_level(content),
        "llama" => sentencepiece(&content.metadata),
        other => Err(format!(
            "vocabularies of type `{other}` are not supported (only `gpt2` and `llama`)"
        )),
    }
}

/// The tokenizer of a `gpt2` (byte-level BPE) vocabulary.
fn byte_level(content: &Content) -> Result<Tokenizer, String> {
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    let built = match pre {
        Some("llama-bpe") => {
            let mut metadata = content.metadata.clone();
            metadata.insert("tokenizer.ggml.pre".into(), Value::String("llama3".into()));
            let renamed = Content {
                magic: content.magic,
                metadata,
                tensor_infos: HashMap::new(),
                tensor_data_offset: 0,
            };
            Tokenizer::from_gguf(&renamed)
        }
        _ => Tokenizer::from_gguf(content),
    };
    let mut tokenizer = built.map_err(|e| super::reason(&e))?;
    if matches!(pre, None | Some("gpt2" | "gpt-2" | "default")) {
        tokenizer.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
        ));
    }
    Ok(tokenizer)
}

/// The tokenizer of a `llama` (SentencePiece) vocabulary, from a GGUF file's metadata.
pub fn sentencepiece(metadata: &HashMap<String, Value>) -> Result<Tokenizer, String> {
    let tokens = strings(
        metadata.get("tokenizer.ggml.tokens"),
        "tokenizer.ggml.tokens",
    )?;
    let scores: Vec<f32> = match metadata.get("tokenizer.ggml.scores") {
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.to_f32()
                    .map_err(|e| format!("tokenizer.ggml.scores: {}", super::reason(&e)))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("tokenizer.ggml.scores is not an array".into()),
        None => return Err("a `llama` vocabulary needs tokenizer.ggml.scores".into()),
    };
    if scores.len() != tokens.len() {
        return Err(format!(
            "{} tokens but {} scores",
            tokens.len(),
            scores.len()
        ));
    }
    // Without types every piece is normal, as in the oldest conversions.
    let types: Vec<i64> = match metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(values)) => values.iter().map(integer).collect::<Result<_, _>>()?,
        Some(_) => return Err("tokenizer.ggml.token_type is not an array".into()),
        None => vec![token_type::NORMAL; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(format!("{} tokens but {} types", tokens.len(), types.len()));
    }
    let id = |key: &str| metadata.get(key).and_then(|v| integer(v).ok());
    let flag = |key: &str, default: bool| {
        metadata
            .get(key)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(default)
    };

    let mut vocab = Vocab::default();
    for (i, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(i as u32);
    }
    let merges = merges(&tokens, &scores, &types, &vocab);
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    // llama.cpp writes `unknown_token_id`; some converters `unk_token_id`.
    let unknown = id("tokenizer.ggml.unknown_token_id")
        .or_else(|| id("tokenizer.ggml.unk_token_id"))
        .or_else(|| {
            types
                .iter()
                .position(|t| *t == token_type::UNKNOWN)
                .map(|i| i as i64)
        })
        .and_then(|i| tokens.get(i as usize));
    if let Some(unknown) = unknown {
        bpe = bpe.unk_token(unknown.clone());
    }
    let bpe = bpe
        .build()
        .map_err(|e| format!("building the BPE model: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let space = NormalizerWrapper::from(
        Replace::new(" ", SPACE).map_err(|e| format!("the space normalizer: {e}"))?,
    );
    let normalizer: NormalizerWrapper = if flag("tokenizer.ggml.add_space_prefix", true) {
        NormalizerSequence::new(vec![Prepend::new(SPACE.into()).into(), space]).into()
    } else {
        space
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| e.to_string())?;
    // No leading-space strip: a generated continuation keeps its first space, so prompt and
    // text read as written when joined (as byte-level vocabularies decode).
    let decoder = DecoderSequence::new(vec![
        DecoderWrapper::Replace(
            Replace::new(SPACE, " ").map_err(|e| format!("the space decoder: {e}"))?,
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ]);
    tokenizer.with_decoder(Some(decoder));

    // Control and unknown pieces are special: never split from text, skipped when decoding.
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| matches!(**t, token_type::CONTROL | token_type::UNKNOWN))
        .map(|(token, _)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| e.to_string())?;
    let user_defined: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == token_type::USER_DEFINED)
        .map(|(token, _)| AddedToken::from(token.clone(), false).normalized(false))
        .collect();
    tokenizer
        .add_tokens(user_defined)
        .map_err(|e| e.to_string())?;

    // llama.cpp puts the beginning-of-sequence piece in front unless told otherwise.
    let bos = id("tokenizer.ggml.bos_token_id")
        .filter(|_| flag("tokenizer.ggml.add_bos_token", true))
        .and_then(|i| tokens.get(i as usize).map(|t| (t.clone(), i as u32)));
    let eos = id("tokenizer.ggml.eos_token_id")
        .filter(|_| flag("tokenizer.ggml.add_eos_token", false))
        .and_then(|i| tokens.get(i as usize).map(|t| (t.clone(), i as u32)));
    if bos.is_some() || eos.is_some() {
        let single: Vec<String> = bos
            .iter()
            .map(|(t, _)| t.clone())
            .chain(std::iter::once("$0".to_string()))
            .chain(eos.iter().map(|(t, _)| t.clone()))
            .collect();
        let template = TemplateProcessing::builder()
            .try_single(single)
            .map_err(|e| format!("the sequence template: {e}"))?
            .special_tokens(bos.into_iter().chain(eos).collect::<Vec<_>>())
            .build()
            .map_err(|e| format!("the sequence template: {e}"))?;
        tokenizer.with_post_processor(Some(template));
    }
    Ok(tokenizer)
}

/// The merges a SentencePiece vocabulary implies: `left right` for every normal piece that
/// splits into two pieces of the vocabulary, highest-scored result first (ties by ids, so
/// the order is total and the same on every load).
fn merges(
    tokens: &[String],
    scores: &[f32],
    types: &[i64],
    vocab: &Vocab,
) -> Vec<(String, String)> {
    let normal = |token: &str| {
        vocab
            .get(token)
            .is_some_and(|i| types[*i as usize] == token_type::NORMAL)
    };
    let mut found: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (merged, token) in tokens.iter().enumerate() {
        if types[merged] != token_type::NORMAL {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if normal(left) && normal(right) {
                found.push((scores[merged], merged as u32, vocab[left], vocab[right]));
            }
        }
    }
    found.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    found
        .into_iter()
        .map(|(_, _, left, right)| {
            (
                tokens[left as usize].clone(),
                tokens[right as usize].clone(),
            )
        })
        .collect()
}

/// The text of token `id` in the vocabulary (`tokenizer.ggml.tokens`).
pub fn token_text(metadata: &HashMap<String, Value>, id: u32) -> Option<String> {
    match metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(tokens)) => tokens.get(id as usize)?.to_string().ok().cloned(),
        _ => None,
    }
}

fn strings(value: Option<&Value>, key: &str) -> Result<Vec<String>, String> {
    match value {
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| format!("{key}: {}", super::reason(&e)))
            })
            .collect(),
        Some(_) => Err(format!("{key} is not an array")),
        None => Err(format!("the metadata has no {key}")),
    }
}

/// Any integer value (llama.cpp writes token types as i32 and ids as u32).
fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::U8(v) => Ok(i64::from(*v)),
        Value::I8(v) => Ok(i64::from(*v)),
        Value::U16(v) => Ok(i64::from(*v)),
        Value::I16(v) => Ok(i64::from(*v)),
        Value::U32(v) => Ok(i64::from(*v)),
        Value::I32(v) => Ok(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).map_err(|e| e.to_string()),
        Value::I64(v) => Ok(*v),
        other => Err(format!("{other:?} is not an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpps_name_for_llama_3s_pre_tokenizer_gets_llama_3s_splitting() {
        let metadata = |pre: Option<&str>| {
            let mut m: HashMap<String, Value> = [
                ("tokenizer.ggml.model", Value::String("gpt2".into())),
                (
                    "tokenizer.ggml.tokens",
                    Value::Array(vec![Value::String("a".into()), Value::String("1".into())]),
                ),
                ("tokenizer.ggml.merges", Value::Array(Vec::new())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(pre) = pre {
                m.insert("tokenizer.ggml.pre".into(), Value::String(pre.into()));
            }
            Content {
                magic: candle_core::quantized::gguf_file::VersionedMagic::GgufV3,
                metadata: m,
                tensor_infos: HashMap::new(),
                tensor_data_offset: 0,
            }
        };
        let pre_tokenizer = |pre: Option<&str>| {
            let tokenizer = from_gguf(&metadata(pre)).expect("builds");
            serde_json::to_string(tokenizer.get_pre_tokenizer().expect("a pre-tokenizer"))
                .expect("serializes")
        };
        // Llama 3 splits digits in groups of up to three before the byte-level step.
        let llama3 = pre_tokenizer(Some("llama-bpe"));
        assert!(
            llama3.contains("Split") && llama3.contains(r"\\p{N}{1,3}"),
            "{llama3}"
        );
        assert_eq!(llama3, pre_tokenizer(Some("llama3")));
        // GPT-2's adds no space in front.
        let gpt2 = pre_tokenizer(None);
        assert!(gpt2.contains(r#""add_prefix_space":false"#), "{gpt2}");
    }

    /// A SentencePiece BPE vocabulary trained with Llama 2's settings, and the ids the
    /// reference implementation gave for some texts (`testdata/make_sentencepiece_fixture.py`).
    #[derive(serde::Deserialize)]
    struct Fixture {
        generated_by: String,
        bos_id: u32,
        eos_id: u32,
        unk_id: u32,
        pieces: Vec<(String, f32, i32)>,
        encoded: Vec<Encoded>,
    }

    #[derive(serde::Deserialize)]
    struct Encoded {
        text: String,
        ids: Vec<u32>,
    }

    #[test]
    fn a_sentencepiece_vocabulary_encodes_as_the_reference_implementation() {
        let fixture: Fixture =
            serde_json::from_str(include_str!("testdata/sentencepiece_bpe.json")).expect("fixture");
        let metadata: HashMap<String, Value> = [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(
                    fixture
                        .pieces
                        .iter()
                        .map(|p| Value::String(p.0.clone()))
                        .collect(),
                ),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(fixture.pieces.iter().map(|p| Value::F32(p.1)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(fixture.pieces.iter().map(|p| Value::I32(p.2)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(fixture.bos_id)),
            ("tokenizer.ggml.eos_token_id", Value::U32(fixture.eos_id)),
            (
                "tokenizer.ggml.unknown_token_id",
                Value::U32(fixture.unk_id),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tokenizer = sentencepiece(&metadata).expect("builds");
        assert!(fixture.encoded.len() >= 5, "{}", fixture.generated_by);
        for case in &fixture.encoded {
            let ids = tokenizer.encode(case.text.as_str(), true).expect("encodes");
            let ids = ids.get_ids();
            assert_eq!(ids[0], fixture.bos_id, "{:?}", case.text);
            assert_eq!(&ids[1..], case.ids.as_slice(), "{:?}", case.text);
            // Decoding gives the text back, after the space SentencePiece puts in front.
            let text = tokenizer.decode(ids, true).expect("decodes");
            assert_eq!(text, format!(" {}", case.text));
        }
    }
}
