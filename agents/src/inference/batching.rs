//! Continuous batching for `llama` models: the generations of one model share each forward
//! pass. One engine thread owns the weights and every generation's attention caches; each
//! generation sends its next tokens (a prompt, or the token it just chose) and waits for the
//! logits, and the engine runs all the steps waiting at that moment as one pass. Every
//! projection then reads its weights once for all of them (`murmur_matmul`'s tiles for
//! Q8_0 and Q4_1, which stays as stored): four generations side by side make about twice
//! the tokens of the same four one after another (docs/benchmarks.md). Attention stays per
//! generation, each over its own cache and positions: a one-token step through
//! [`Heads::attend`], a prompt through candle's ops.
//!
//! The model is candle's quantized llama (`candle_transformers::models::quantized_llama`)
//! written again with rows from several sequences in one matrix. A pass computes each row
//! as it would alone, bit for bit, so generations side by side give the tokens each gives
//! alone. Against candle's llama the logits differ in rounding only, which the 8-bit
//! rounding of each layer's input can enlarge; tests bound the difference along candle's own
//! generations. Mixture-of-experts llama files keep candle's model.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Module};
use candle_transformers::quantized_nn::RmsNorm;
use murmur_matmul::QuantizedMatrix;

use super::Forward;
use super::attention::{self, Heads, LayerCache};

/// How long the engine waits, once a step is in, for the other open generations' steps
/// before it runs the pass without them. Choosing a token takes well under a millisecond;
/// a grammar's token mask may take a few, and a generation that misses a pass joins the next.
const GATHER: Duration = Duration::from_millis(3);

/// A `llama` decoder whose passes take rows of several sequences at once.
pub(super) struct LlamaBatch {
    embeddings: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Projection,
    cos: Tensor,
    sin: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct Layer {
    attention_norm: RmsNorm,
    query: Projection,
    key: Projection,
    value: Projection,
    attention_output: Projection,
    ffn_norm: RmsNorm,
    gate: Projection,
    up: Projection,
    down: Projection,
}

/// A weight matrix: Q8_0 and Q4_1 ones through `murmur_matmul`'s tiles, which read each
/// weight block once for every row of a pass and give candle's results bit for bit; others
/// (and all of them on CPUs without the tiles' features) through candle's `QMatMul`.
enum Projection {
    Tiled(QuantizedMatrix),
    Candle(QMatMul),
}

impl Projection {
    fn new(weights: QTensor) -> candle_core::Result<Self> {
        Ok(
            match QuantizedMatrix::from_qtensor(&weights).map_err(candle_core::Error::wrap)? {
                Some(matrix) => Self::Tiled(matrix),
                None => Self::Candle(QMatMul::from_qtensor(weights)?),
            },
        )
    }

    /// `x` (rows, inputs) times the weights transposed: (rows, outputs).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Tiled(matrix) => matrix.forward(x).map_err(candle_core::Error::wrap),
            Self::Candle(matmul) => matmul.forward(x),
        }
    }

    /// `x` times each of `projections`, as [`Projection::forward`] gives each: in one go
    /// when all are tiled ([`murmur_matmul::forward_each`]: one quantization of `x`, one
    /// meeting of the pool's threads), else one by one.
    fn forward_each<const N: usize>(
        projections: [&Self; N],
        x: &Tensor,
    ) -> candle_core::Result<[Tensor; N]> {
        let tiled: Option<Vec<&QuantizedMatrix>> = projections
            .iter()
            .map(|p| match p {
                Self::Tiled(matrix) => Some(matrix),
                Self::Candle(_) => None,
            })
            .collect();
        let products = match tiled {
            Some(matrices) => {
                murmur_matmul::forward_each(&matrices, x).map_err(candle_core::Error::wrap)?
            }
            None => projections
                .iter()
                .map(|p| p.forward(x))
                .collect::<candle_core::Result<_>>()?,
        };
        products
            .try_into()
            .map_err(|_| candle_core::Error::Msg("one product per projection".into()))
    }
}

/// One sequence's keys and values, per layer.
#[derive(Default)]
struct Cache {
    layers: Vec<LayerCache>,
}

/// One sequence's part of a pass: its cache, the tokens to feed and where they start.
struct Segment<'a> {
    cache: &'a mut Cache,
    tokens: &'a [u32],
    position: usize,
}

impl LlamaBatch {
    /// Whether a model of `architecture` in `content` loads as a batched llama with
    /// `murmur_matmul`'s tiles (which multiply Q4_1 as stored): a llama that is not a
    /// mixture of experts, on a CPU those kernels run on.
    pub(super) fn takes(architecture: super::Architecture, content: &Content) -> bool {
        architecture == super::Architecture::Llama
            && !Self::mixture_of_experts(content)
            && murmur_matmul::multiplies(candle_core::quantized::GgmlDType::Q4_1)
    }

    /// Whether a llama file holds a mixture of experts (candle's model runs those).
    fn mixture_of_experts(content: &Content) -> bool {
        content
            .metadata
            .get("llama.expert_count")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(0)
            > 1
    }

    /// The model in `content`, or `None` for a mixture-of-experts file (candle's model runs
    /// those). `context` bounds the positions (the rotary tables' length).
    pub(super) fn from_gguf<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        context: usize,
    ) -> candle_core::Result<Option<Self>> {
        let device = &Device::Cpu;
        let metadata = |key: &str| {
            content
                .metadata
                .get(&format!("llama.{key}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("no llama.{key} in the metadata")))
        };
        if Self::mixture_of_experts(content) {
            return Ok(None);
        }
        let heads = metadata("attention.head_count")?.to_u32()? as usize;
        let kv_heads = metadata("attention.head_count_kv")?.to_u32()? as usize;
        let layer_count = metadata("block_count")?.to_u32()? as usize;
        let width = metadata("embedding_length")?.to_u32()? as usize;
        let rope_dim = metadata("rope.dimension_count")?.to_u32()? as usize;
        let eps = f64::from(metadata("attention.layer_norm_rms_epsilon")?.to_f32()?);
        let freq_base = metadata("rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10_000.0);
        let tensor = |reader: &mut R, name: &str| content.tensor(reader, name, device);
        let matmul = |reader: &mut R, name: &str| Projection::new(tensor(reader, name)?);
        let norm = |reader: &mut R, name: &str| RmsNorm::from_qtensor(tensor(reader, name)?, eps);
        let embeddings_q: QTensor = tensor(reader, "token_embd.weight")?;
        let embeddings = Embedding::new(embeddings_q.dequantize(device)?, width);
        let output = match tensor(reader, "output.weight") {
            Ok(output) => output,
            Err(_) => embeddings_q,
        };
        let mut layers = Vec::with_capacity(layer_count);
        for index in 0..layer_count {
            let name = |part: &str| format!("blk.{index}.{part}.weight");
            layers.push(Layer {
                attention_norm: norm(reader, &name("attn_norm"))?,
                query: matmul(reader, &name("attn_q"))?,
                key: matmul(reader, &name("attn_k"))?,
                value: matmul(reader, &name("attn_v"))?,
                attention_output: matmul(reader, &name("attn_output"))?,
                ffn_norm: norm(reader, &name("ffn_norm"))?,
                gate: matmul(reader, &name("ffn_gate"))?,
                up: matmul(reader, &name("ffn_up"))?,
                down: matmul(reader, &name("ffn_down"))?,
            });
        }
        // The rotary tables as candle's llama computes them, for `context` positions.
        let theta: Vec<f32> = (0..rope_dim)
            .step_by(2)
            .map(|i| 1f32 / freq_base.powf(i as f32 / rope_dim as f32))
            .collect();
        let theta = Tensor::new(theta.as_slice(), device)?;
        let angles = Tensor::arange(0, context as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((context, 1))?
            .matmul(&theta.reshape((1, theta.elem_count()))?)?;
        Ok(Some(Self {
            embeddings,
            layers,
            norm: norm(reader, "output_norm.weight")?,
            output: Projection::new(output)?,
            cos: angles.cos()?,
            sin: angles.sin()?,
            heads,
            kv_heads,
            head_dim: width / heads,
        }))
    }

    /// How the projections multiply, for people: e.g. "murmur-matmul AvxVnni: 210 Q4_1,
    /// 1 Q8_0" (and "candle: N" for those candle multiplies).
    pub(super) fn projections(&self) -> String {
        let mut tiled: std::collections::BTreeMap<String, usize> = Default::default();
        let mut kernel = None;
        let mut candle = 0;
        let all = self
            .layers
            .iter()
            .flat_map(|l| {
                [
                    &l.query,
                    &l.key,
                    &l.value,
                    &l.attention_output,
                    &l.gate,
                    &l.up,
                    &l.down,
                ]
            })
            .chain([&self.output]);
        for projection in all {
            match projection {
                Projection::Tiled(matrix) => {
                    kernel = Some(matrix.kernel());
                    *tiled.entry(format!("{:?}", matrix.dtype())).or_default() += 1;
                }
                Projection::Candle(_) => candle += 1,
            }
        }
        let mut parts = Vec::new();
        if let Some(kernel) = kernel {
            let counts: Vec<String> = tiled.iter().map(|(d, n)| format!("{n} {d}")).collect();
            parts.push(format!("murmur-matmul {kernel:?}: {}", counts.join(", ")));
        }
        if candle > 0 {
            parts.push(format!("candle: {candle}"));
        }
        parts.join("; ")
    }

    /// One pass over every segment's tokens: the logits after each segment's last token,
    /// one row per segment, and each cache extended by its tokens.
    fn forward(&self, segments: &mut [Segment<'_>]) -> candle_core::Result<Tensor> {
        let device = &Device::Cpu;
        let ids: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let rows = ids.len();
        let mut x = self
            .embeddings
            .forward(&Tensor::new(ids.as_slice(), device)?)?;
        // Each one-token step's rotation (cos, sin at its position), the same in every layer.
        let rotations = segments
            .iter()
            .map(|segment| {
                (segment.tokens.len() == 1)
                    .then(|| -> candle_core::Result<_> {
                        Ok((
                            self.cos.get(segment.position)?.to_vec1::<f32>()?,
                            self.sin.get(segment.position)?.to_vec1::<f32>()?,
                        ))
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (index, layer) in self.layers.iter().enumerate() {
            let normed = layer.attention_norm.forward(&x)?;
            let [query, key, value] =
                Projection::forward_each([&layer.query, &layer.key, &layer.value], &normed)?;
            let attended = self.attend(index, segments, &rotations, &query, &key, &value)?;
            x = (layer.attention_output.forward(&attended)? + &x)?;
            let normed = layer.ffn_norm.forward(&x)?;
            let [gate, up] = Projection::forward_each([&layer.gate, &layer.up], &normed)?;
            let gated = candle_nn::ops::silu(&gate)?;
            let mixed = layer.down.forward(&(gated * up)?)?;
            x = (mixed + &x)?;
        }
        debug_assert_eq!(x.dim(0)?, rows);
        // Each segment's last row.
        let mut last = Vec::with_capacity(segments.len());
        let mut end = 0;
        for segment in segments.iter() {
            end += segment.tokens.len();
            last.push((end - 1) as u32);
        }
        let x = x.index_select(&Tensor::new(last.as_slice(), device)?, 0)?;
        self.output.forward(&self.norm.forward(&x)?)
    }

    /// Attention of layer `index` for every segment's rows of `query`, each over its cache
    /// once extended by its rows of `key` and `value`: (rows, heads × head dim). Steps of
    /// one token (those with a rotation in `rotations`) go through [`Heads::attend`];
    /// longer ones through candle's ops.
    fn attend(
        &self,
        index: usize,
        segments: &mut [Segment<'_>],
        rotations: &[Option<(Vec<f32>, Vec<f32>)>],
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let device = &Device::Cpu;
        let (rows, width) = query.dims2()?;
        let kv_width = self.kv_heads * self.head_dim;
        let limit = self.cos.dim(0)?;
        let rows_of = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        // Queries and keys as plain values only where a one-token step reads them.
        let (queries, keys) = if rotations.iter().any(Option::is_some) {
            (rows_of(query)?, rows_of(key)?)
        } else {
            (Vec::new(), Vec::new())
        };
        let values = rows_of(value)?;
        let mut out = vec![0f32; rows * width];
        // Each one-token step's query, rotated, with its segment and row.
        let mut steps: Vec<(usize, Vec<f32>, usize)> = Vec::new();
        let mut row = 0;
        for (s, segment) in segments.iter_mut().enumerate() {
            let len = segment.tokens.len();
            if segment.cache.layers.len() <= index {
                segment.cache.layers.push(Default::default());
            }
            let cache = &mut segment.cache.layers[index];
            if let Some((cos, sin)) = &rotations[s] {
                let mut k = keys[row * kv_width..][..kv_width].to_vec();
                attention::rotate(&mut k, self.head_dim, cos, sin);
                let v = &values[row * kv_width..][..kv_width];
                cache.write(segment.position, &k, v, kv_width, limit)?;
                let mut q = queries[row * width..][..width].to_vec();
                attention::rotate(&mut q, self.head_dim, cos, sin);
                steps.push((s, q, row));
            } else {
                let y = self.attend_prompt(
                    cache,
                    segment.position,
                    &query.narrow(0, row, len)?,
                    &key.narrow(0, row, len)?,
                    &values[row * kv_width..][..len * kv_width],
                    limit,
                )?;
                out[row * width..][..len * width].copy_from_slice(&y);
            }
            row += len;
        }
        if !steps.is_empty() {
            let steps: Vec<attention::Step<'_>> = steps
                .iter()
                .map(|(s, query, row)| attention::Step {
                    query,
                    cache: &segments[*s].cache.layers[index],
                    row: *row,
                })
                .collect();
            Heads {
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: self.head_dim,
            }
            .attend(&steps, &mut out);
        }
        Tensor::from_vec(out, (rows, width), device)
    }

    /// Attention of a segment of several tokens from `position` on, in candle's ops:
    /// `query` and `key` its rows of the projections (len, heads × head dim), `values` its
    /// value rows; the cache is extended by its keys and values. Returns (len × width)
    /// values, row-major.
    fn attend_prompt(
        &self,
        cache: &mut LayerCache,
        position: usize,
        query: &Tensor,
        key: &Tensor,
        values: &[f32],
        limit: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let device = &Device::Cpu;
        let len = query.dim(0)?;
        let kv_width = self.kv_heads * self.head_dim;
        let heads_of = |t: &Tensor, heads: usize| -> candle_core::Result<Tensor> {
            t.reshape((1, len, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = self.rotate(&heads_of(query, self.heads)?, position)?;
        let k = self.rotate(&heads_of(key, self.kv_heads)?, position)?;
        // The cache holds positions in the projections' row layout.
        let k = k.transpose(1, 2)?.flatten_all()?.to_vec1::<f32>()?;
        cache.write(position, &k, values, kv_width, limit)?;
        let positions = position + len;
        let cached = |v: &[half::f16]| -> candle_core::Result<Tensor> {
            Tensor::from_slice(v, (1, positions, self.kv_heads, self.head_dim), device)?
                .to_dtype(candle_core::DType::F32)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (k, v) = (cached(cache.keys())?, cached(cache.values())?);
        // The query heads that share a key/value head, as rows of one matrix:
        // (1, kv heads, repeat × len, head dim), instead of copying the keys and
        // values once per query head (candle's `repeat_kv`).
        let repeat = self.heads / self.kv_heads;
        let q = q.reshape((1, self.kv_heads, repeat * len, self.head_dim))?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let mask = candle_transformers::utils::build_causal_mask(len, position, device)?;
        let mask = Tensor::cat(&vec![&mask; repeat], 0)?.broadcast_as(scores.shape())?;
        let blocked = Tensor::new(f32::NEG_INFINITY, device)?.broadcast_as(scores.shape())?;
        let scores = mask.where_cond(&blocked, &scores)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        weights
            .matmul(&v)?
            .reshape((1, self.heads, len, self.head_dim))?
            .transpose(1, 2)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    /// `x` (1, heads, positions, head dim) rotated for positions from `position` on
    /// (llama's interleaved pairs).
    fn rotate(&self, x: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, position, len)?;
        let sin = self.sin.narrow(0, position, len)?;
        candle_nn::rotary_emb::rope_i(x, &cos, &sin)
    }
}

/// A step a generation waits on: its tokens and the reply with the logits, shaped (1, vocab).
struct Step {
    sequence: u64,
    tokens: Vec<u32>,
    position: usize,
    reply: mpsc::SyncSender<candle_core::Result<Tensor>>,
}

enum Message {
    Open(u64),
    Step(Step),
    Close(u64),
}

/// The engine of one model: its thread runs the passes; [`Batcher::open`] starts a
/// generation on it.
pub(super) struct Batcher {
    messages: mpsc::Sender<Message>,
    next_sequence: std::sync::atomic::AtomicU64,
    passes: std::sync::Arc<PassSizes>,
    projections: String,
}

/// How many passes held how many generations.
pub(super) type PassSizes = parking_lot::Mutex<std::collections::BTreeMap<usize, u64>>;

impl Batcher {
    /// Starts the engine thread for `model`; it ends when the batcher and its sequences are gone.
    pub(super) fn start(model: LlamaBatch) -> std::io::Result<Self> {
        let (messages, inbox) = mpsc::channel();
        let projections = model.projections();
        let passes = std::sync::Arc::new(PassSizes::default());
        let counted = passes.clone();
        std::thread::Builder::new()
            .name("murmur-inference-batch".into())
            .spawn(move || run_engine(&model, &inbox, &counted))?;
        Ok(Self {
            messages,
            next_sequence: std::sync::atomic::AtomicU64::new(0),
            passes,
            projections,
        })
    }

    /// How many passes so far held how many generations.
    pub(super) fn passes_by_size(&self) -> std::collections::BTreeMap<usize, u64> {
        self.passes.lock().clone()
    }

    /// How the model's projections multiply ([`LlamaBatch::projections`]).
    pub(super) fn projections(&self) -> &str {
        &self.projections
    }

    /// A new generation with an empty cache.
    pub(super) fn open(&self) -> Sequence {
        let id = self
            .next_sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A send fails only when the engine thread is gone, which `forward` reports.
        let _ = self.messages.send(Message::Open(id));
        Sequence {
            id,
            messages: self.messages.clone(),
        }
    }
}

/// One generation on a [`Batcher`]: its passes are batched with the other open ones.
pub(super) struct Sequence {
    id: u64,
    messages: mpsc::Sender<Message>,
}

impl Forward for Sequence {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        let tokens: Vec<u32> = input.flatten_all()?.to_vec1()?;
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || candle_core::Error::Msg("the model's batching engine stopped".into());
        self.messages
            .send(Message::Step(Step {
                sequence: self.id,
                tokens,
                position,
                reply,
            }))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Sequence {
    fn drop(&mut self) {
        let _ = self.messages.send(Message::Close(self.id));
    }
}

/// The engine's loop: gathers the open generations' steps and runs them as one pass.
fn run_engine(model: &LlamaBatch, inbox: &mpsc::Receiver<Message>, passes: &PassSizes) {
    let mut caches: HashMap<u64, Cache> = HashMap::new();
    let mut waiting: Vec<Step> = Vec::new();
    loop {
        // Block for the first message, then gather until every open generation has a step
        // waiting or the gathering time is up.
        let Ok(first) = inbox.recv() else { return };
        let mut message = Some(first);
        let mut deadline: Option<Instant> = None;
        loop {
            match message.take() {
                Some(Message::Open(id)) => {
                    caches.insert(id, Cache::default());
                }
                Some(Message::Close(id)) => {
                    caches.remove(&id);
                }
                Some(Message::Step(step)) => {
                    deadline.get_or_insert_with(|| Instant::now() + GATHER);
                    waiting.push(step);
                }
                None => {}
            }
            if waiting.is_empty() {
                break;
            }
            let open_without_step = caches.len() > waiting.len();
            let Some(left) = deadline
                .filter(|_| open_without_step)
                .and_then(|d| d.checked_duration_since(Instant::now()))
            else {
                break;
            };
            match inbox.recv_timeout(left) {
                Ok(next) => message = Some(next),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if !waiting.is_empty() {
            *passes.lock().entry(waiting.len()).or_default() += 1;
            run_pass(model, &mut caches, std::mem::take(&mut waiting));
        }
    }
}

/// One pass over `steps`, each answered with its logits or the pass's error. A step past
/// the model's positions is answered alone, so it fails no other generation's pass.
fn run_pass(model: &LlamaBatch, caches: &mut HashMap<u64, Cache>, steps: Vec<Step>) {
    let positions = model.cos.dim(0).unwrap_or(0);
    let mut taken: Vec<(Step, Cache)> = Vec::with_capacity(steps.len());
    for step in steps {
        if step.tokens.is_empty() || step.position + step.tokens.len() > positions {
            let _ = step.reply.send(Err(candle_core::Error::Msg(format!(
                "{} tokens at position {} do not fit the model's {positions} positions",
                step.tokens.len(),
                step.position
            ))));
            continue;
        }
        let cache = caches.remove(&step.sequence).unwrap_or_default();
        taken.push((step, cache));
    }
    if taken.is_empty() {
        return;
    }
    let mut segments: Vec<Segment<'_>> = taken
        .iter_mut()
        .map(|(step, cache)| Segment {
            cache,
            tokens: &step.tokens,
            position: step.position,
        })
        .collect();
    // candle asserts what it expects of its inputs; a panic fails this pass, not the engine.
    let logits = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.forward(&mut segments)
    }))
    .unwrap_or_else(|_| Err(candle_core::Error::Msg("the forward pass panicked".into())));
    drop(segments);
    for (index, (step, cache)) in taken.into_iter().enumerate() {
        let answer = match &logits {
            Ok(logits) => logits.narrow(0, index, 1).and_then(|row| row.contiguous()),
            Err(e) => Err(candle_core::Error::Msg(e.to_string())),
        };
        // A failed pass leaves caches half extended: those generations cannot go on.
        if step.reply.send(answer).is_ok() && logits.is_ok() {
            caches.insert(step.sequence, cache);
        }
    }
}
