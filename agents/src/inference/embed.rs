//! Sentence embeddings with a BERT model in the sentence-transformers layout (all-MiniLM-L6-v2
//! as `scripts/install.sh` installs it): `config.json`, `tokenizer.json` and
//! `model.safetensors` in one directory. Each text is tokenized (truncated to
//! [`MAX_EMBED_TOKENS`]), run through the encoder, mean-pooled over its real tokens and
//! scaled to unit length, so a dot product is the cosine similarity.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};

use super::InferenceError;

/// Longest text, in tokens, an embedding reads (the rest is cut).
pub const MAX_EMBED_TOKENS: usize = 256;

/// A loaded sentence-embedding model.
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    name: String,
    sha256: String,
    dimension: usize,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("name", &self.name)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

fn model_error(path: &Path, reason: impl std::fmt::Display) -> InferenceError {
    InferenceError::Model {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl SentenceEmbedder {
    /// Loads the model in `dir` on the CPU.
    pub fn load(dir: &Path) -> Result<Self, InferenceError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| InferenceError::Io { path, source })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| model_error(&dir.join("config.json"), e))?;
        let weights_path = dir.join("model.safetensors");
        let weights = read("model.safetensors")?;
        let sha256 = crate::artifacts::to_hex(&Sha256::digest(&weights));
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load_buffer(&weights, &device)
            .map_err(|e| model_error(&weights_path, e))?;
        drop(weights);
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| model_error(&weights_path, e))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| {
                InferenceError::Tokenizer {
                    path: tokenizer_path.clone(),
                    reason: e.to_string(),
                }
            })?;
        tokenizer
            .with_padding(Some(tokenizers::PaddingParams::default()))
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_EMBED_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| InferenceError::Tokenizer {
                path: tokenizer_path,
                reason: e.to_string(),
            })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "embedder".into());
        Ok(Self {
            model,
            tokenizer,
            device,
            name,
            sha256,
            dimension: config.hidden_size,
        })
    }

    /// The model's name (its directory's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of its weights.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Length of each embedding.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Unit-length embeddings of `texts`, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, InferenceError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let failed = |e: &dyn std::fmt::Display| InferenceError::Model {
            path: PathBuf::from(&self.name),
            reason: e.to_string(),
        };
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| failed(&e))?;
        let rows = |pick: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(pick(e), &self.device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)
        };
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = rows(&|e| e.get_ids())?;
            let types = rows(&|e| e.get_type_ids())?;
            let mask = rows(&|e| e.get_attention_mask())?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            // Mean over the real tokens only: padding must not pull short texts together.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(|e| failed(&e))
    }
}

impl crate::recall::Embedder for SentenceEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        SentenceEmbedder::embed(self, texts).map_err(|e| e.to_string())
    }

    fn model(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recall::cosine;

    /// all-MiniLM-L6-v2 as `scripts/install.sh` installs it (CI does).
    fn minilm() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
        if dir.join("model.safetensors").is_file() {
            return Some(dir);
        }
        assert!(
            std::env::var("MURMUR_SKIP_MODELS").as_deref() == Ok("1"),
            "{} is missing: run `bash scripts/install.sh` (it installs the models unless MURMUR_SKIP_MODELS=1)",
            dir.display()
        );
        None
    }

    #[test]
    fn sentences_alike_in_meaning_embed_close() -> Result<(), InferenceError> {
        let Some(dir) = minilm() else {
            return Ok(());
        };
        let embedder = SentenceEmbedder::load(&dir)?;
        assert_eq!(embedder.dimension(), 384);
        let texts: Vec<String> = [
            "A cat is sitting on the mat.",
            "The kitten rests on a rug.",
            "Stock markets fell sharply today.",
            "What is the capital of France?",
            "Paris is the capital city of France, on the Seine.",
        ]
        .map(String::from)
        .to_vec();
        let vectors = embedder.embed(&texts)?;
        assert_eq!(vectors.len(), 5);
        for v in &vectors {
            assert_eq!(v.len(), 384);
            assert!((cosine(v, v) - 1.0).abs() < 1e-4, "unit length");
        }
        let cats = cosine(&vectors[0], &vectors[1]);
        let markets = cosine(&vectors[0], &vectors[2]);
        assert!(
            cats > 0.5 && cats > markets + 0.3,
            "cats {cats}, markets {markets}"
        );
        let paris = cosine(&vectors[3], &vectors[4]);
        assert!(
            paris > cosine(&vectors[3], &vectors[2]) + 0.3,
            "paris {paris}"
        );
        // Padding in a batch changes nothing: a text embeds the same alone.
        let alone = embedder.embed(&texts[..1])?;
        assert!((cosine(&alone[0], &vectors[0]) - 1.0).abs() < 1e-4);
        Ok(())
    }
}
