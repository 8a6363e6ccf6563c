//! Decoding constrained by a JSON Schema. llguidance (the engine llama.cpp and vLLM use)
//! turns the schema into a grammar and, before each token, computes which tokens of the
//! model's vocabulary keep the output a prefix of a document the schema accepts; the others
//! are masked out of the logits before the token is chosen. So even a 135M model writes
//! only well-formed JSON the schema allows: a tool call names a tool that exists, with
//! arguments of the declared types.
//!
//! llguidance reads the vocabulary as bytes per token ([`token_bytes`]): byte-level BPE
//! pieces are mapped back through GPT-2's byte ↔ character table, SentencePiece pieces get
//! their spaces (`▁`) and byte pieces (`<0xNN>`) back, and special tokens are marked as
//! llguidance expects (a leading 0xFF), so no document can contain one.

use std::collections::HashSet;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use tokenizers::Tokenizer;
use tokenizers::decoders::DecoderWrapper;
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use super::tokenizer::SPACE;

/// A model's vocabulary as llguidance reads it, and the factory of its parsers.
pub(super) struct GrammarVocabulary {
    factory: ParserFactory,
}

impl GrammarVocabulary {
    /// The vocabulary of `tokenizer`, whose logits have `vocab_size` entries, ending texts
    /// with `end_of_text`.
    pub(super) fn new(
        tokenizer: &Tokenizer,
        vocab_size: usize,
        end_of_text: u32,
    ) -> Result<Self, String> {
        let mut words = token_bytes(tokenizer);
        words.resize(vocab_size.max(words.len()), Vec::new());
        let info = TokRxInfo::new(words.len() as u32, end_of_text);
        // The tokenization llguidance asks for (of text the grammar forces) is the trie's
        // greedy one: the tokenizer's own would put SentencePiece's leading space in front.
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        // Problems are returned as errors; nothing is printed.
        factory.quiet();
        Ok(Self { factory })
    }

    /// A matcher for documents `schema` accepts, or why the schema cannot be one.
    pub(super) fn matcher(&self, schema: &serde_json::Value) -> Result<Matcher, String> {
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(schema.clone()))
            .map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        match matcher.get_error() {
            Some(e) => Err(e),
            None => Ok(matcher),
        }
    }
}

/// The bytes each token id stands for (empty for ids without a token); special tokens
/// start with [`TokTrie::SPECIAL_TOKEN_MARKER`].
pub(super) fn token_bytes(tokenizer: &Tokenizer) -> Vec<Vec<u8>> {
    let byte_level = matches!(tokenizer.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
    let special: HashSet<u32> = tokenizer
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, token)| token.special)
        .map(|(id, _)| *id)
        .collect();
    let characters = byte_of_character();
    (0..tokenizer.get_vocab_size(true) as u32)
        .map(|id| {
            let Some(text) = tokenizer.id_to_token(id) else {
                return Vec::new();
            };
            if special.contains(&id) {
                return [&[TokTrie::SPECIAL_TOKEN_MARKER], text.as_bytes()].concat();
            }
            if byte_level {
                return text
                    .chars()
                    .map(|c| characters.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| text.into_bytes());
            }
            if let Some(hex) = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>'))
                && let Ok(byte) = u8::from_str_radix(hex, 16)
            {
                return vec![byte];
            }
            text.replace(SPACE, " ").into_bytes()
        })
        .collect()
}

/// GPT-2's table from the characters byte-level pieces are written in to the bytes they
/// stand for: printable bytes are themselves, the others are shifted to U+0100 onwards.
fn byte_of_character() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut shifted = 0u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (char::from(b), b)
            } else {
                let c = char::from_u32(256 + shifted).expect("below U+0200");
                shifted += 1;
                (c, b)
            }
        })
        .collect()
}
