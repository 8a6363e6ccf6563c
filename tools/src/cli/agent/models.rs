//! The models agent kinds load before joining: an inference agent's GGUF language model and
//! a memory agent's sentence embedder (candle, behind the `inference` feature).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
#[cfg(not(feature = "inference"))]
use anyhow::bail;

#[cfg(feature = "inference")]
pub(crate) type LoadedModel = std::sync::Arc<murmur_agents::inference::GgufModel>;
#[cfg(not(feature = "inference"))]
pub(crate) type LoadedModel = std::convert::Infallible;

/// Loads the model of an inference agent (on a blocking thread: it reads the whole file).
#[cfg(feature = "inference")]
pub(crate) async fn load_model(path: &Path) -> Result<LoadedModel> {
    let path = path.to_path_buf();
    let model =
        tokio::task::spawn_blocking(move || murmur_agents::inference::GgufModel::load(&path))
            .await??;
    eprintln!(
        "model loaded: {} {} (sha256 {})",
        model.architecture(),
        model.name().unwrap_or("(unnamed)"),
        model.sha256()
    );
    Ok(std::sync::Arc::new(model))
}

#[cfg(not(feature = "inference"))]
pub(crate) async fn load_model(_path: &Path) -> Result<LoadedModel> {
    bail!("this murmur was built without the `inference` feature")
}

/// Loads a memory agent's sentence-embedding model (on a blocking thread).
#[cfg(feature = "inference")]
pub(super) async fn load_embedder(
    dir: &Path,
) -> Result<std::sync::Arc<dyn murmur_agents::recall::Embedder>> {
    let dir = dir.to_path_buf();
    let embedder = tokio::task::spawn_blocking(move || {
        murmur_agents::inference::embed::SentenceEmbedder::load(&dir)
    })
    .await??;
    eprintln!(
        "embedding model loaded: {} ({} dimensions, sha256 {})",
        embedder.name(),
        embedder.dimension(),
        embedder.sha256()
    );
    Ok(std::sync::Arc::new(embedder))
}

#[cfg(not(feature = "inference"))]
pub(super) async fn load_embedder(
    _dir: &Path,
) -> Result<std::sync::Arc<dyn murmur_agents::recall::Embedder>> {
    bail!("this murmur was built without the `inference` feature (--embedding-model needs it)")
}

#[cfg(feature = "inference")]
pub(crate) fn model_labels(model: &LoadedModel) -> BTreeMap<String, String> {
    model.labels()
}

#[cfg(not(feature = "inference"))]
pub(crate) fn model_labels(model: &LoadedModel) -> BTreeMap<String, String> {
    match *model {}
}

#[cfg(feature = "inference")]
pub(super) fn inference_handler(model: LoadedModel) -> murmur_agents::worker::Handler {
    murmur_agents::inference::generate_handler(model)
}

#[cfg(not(feature = "inference"))]
pub(super) fn inference_handler(model: LoadedModel) -> murmur_agents::worker::Handler {
    match model {}
}
