//! The inference suite: murmur's model runner (candle, as an inference agent runs it) and
//! llama.cpp (PyPI `xllamacpp`, run by `scripts/llamacpp_baseline.py`) on the same GGUF
//! file, thread count, prompts and token counts, in one run. Greedy decoding, a fixed
//! number of tokens (the end of text does not stop either side).
//!
//! Figures: prompt processing and generation tokens/s for murmur as it loads models (a
//! llama's projections through `murmur-matmul`, other weights without fast kernels
//! requantized to Q8_0), for candle's own model on the weights as stored (the floor), llama.cpp's,
//! the ratios, four concurrent requests on one loaded model, and the memory the loaded model
//! adds to the process.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use murmur_agents::inference::{GenerateOptions, GgufModel, LoadOptions};

use crate::median;

/// What one generation measured.
#[derive(Debug, Clone, Copy)]
struct Speed {
    prompt_tokens: usize,
    /// Prompt tokens per second (time to the first generated token).
    prompt_per_second: f64,
    /// Generated tokens per second after the first.
    generated_per_second: f64,
}

/// Runs the suite on `model` with `threads` CPU threads.
pub(crate) fn inference_suite(
    model: &std::path::Path,
    threads: usize,
    tokens: usize,
    runs: usize,
    python: Option<&std::path::Path>,
) -> Result<()> {
    let prompts = [
        "The capital of France is",
        "Write a short story about a robot who learns to paint. Once upon a time, in a small workshop at the edge of a busy city, there lived a robot named",
    ];
    println!(
        "model {} ({:.1} MB), {threads} threads, {tokens} tokens generated per run, greedy, median of {runs}",
        model.display(),
        std::fs::metadata(model)?.len() as f64 / 1e6
    );
    let rss_before = rss_mib();
    let loaded_at = Instant::now();
    let fast = Arc::new(GgufModel::load(model)?);
    let load_s = loaded_at.elapsed().as_secs_f64();
    let rss_loaded = rss_mib();
    println!(
        "murmur: loaded in {load_s:.2} s, {} tensors requantized to Q8_0, projections: {}; the process grew by {:.0} MiB (RSS {:.0} MiB); the agent announces model_memory_mib={}",
        fast.requantized_tensors(),
        fast.projections().unwrap_or("candle"),
        rss_loaded - rss_before,
        rss_loaded,
        fast.memory_needed_mib()
    );
    // The floor: candle's own model on the weights as stored.
    let stored = GgufModel::load_with(
        model,
        LoadOptions {
            requantize_slow_weights: false,
            batch_generations: false,
        },
    )?;
    let mut rows = Vec::new();
    for prompt in prompts {
        let murmur = measure(&fast, prompt, tokens, runs)?;
        let floor = measure(&stored, prompt, tokens, runs)?;
        let llama = match python {
            Some(python) => Some(llama_cpp(python, model, threads, prompt, tokens, runs)?),
            None => None,
        };
        rows.push((prompt, murmur, floor, llama));
    }
    println!(
        "\n| prompt tokens (murmur / llama.cpp) | murmur pp t/s | murmur gen t/s | as stored gen t/s | llama.cpp pp t/s | llama.cpp gen t/s | pp ratio | gen ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (_, murmur, floor, llama) in &rows {
        let (lp, lpp, lg) = llama.map_or((0, f64::NAN, f64::NAN), |l| {
            (l.prompt_tokens, l.prompt_per_second, l.generated_per_second)
        });
        println!(
            "| {} / {lp} | {:.1} | {:.1} | {:.1} | {lpp:.1} | {lg:.1} | {:.2} | {:.2} |",
            murmur.prompt_tokens,
            murmur.prompt_per_second,
            murmur.generated_per_second,
            floor.generated_per_second,
            murmur.prompt_per_second / lpp,
            murmur.generated_per_second / lg,
        );
    }
    // Four requests at once on the one loaded model, as an agent with 4 slots runs them:
    // batched, each pass holds the steps of all four (murmur's default for llama models);
    // the same four taking turns pass by pass on a model loaded without batching; and the
    // baseline, the same four one after another, end to end like them (prompt included).
    let single = rows[0].1.generated_per_second;
    let turns = Arc::new(GgufModel::load_with(
        model,
        LoadOptions {
            batch_generations: false,
            ..LoadOptions::default()
        },
    )?);
    let four = |model: &Arc<GgufModel>, side_by_side: bool| -> Result<f64> {
        let started = Instant::now();
        let mut generated = 0;
        if side_by_side {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let model = model.clone();
                    std::thread::spawn(move || model.generate(prompts[0], &fixed(tokens)))
                })
                .collect();
            for h in handles {
                generated += h
                    .join()
                    .map_err(|_| anyhow::anyhow!("a generation panicked"))??
                    .tokens
                    .len();
            }
        } else {
            for _ in 0..4 {
                generated += model.generate(prompts[0], &fixed(tokens))?.tokens.len();
            }
        }
        Ok(generated as f64 / started.elapsed().as_secs_f64())
    };
    let one_after_another = four(&fast, false)?;
    let passes_before = fast.passes_by_size();
    let batched = four(&fast, true)?;
    let taking_turns = four(&turns, true)?;
    let mut passes = fast.passes_by_size();
    for (size, count) in passes_before {
        *passes.entry(size).or_default() -= count;
    }
    passes.retain(|_, count| *count > 0);
    let (steps, count) = passes.iter().fold((0, 0), |(steps, count), (size, n)| {
        (steps + size * *n as usize, count + n)
    });
    println!(
        "\n4 concurrent requests on one model, batched: {batched:.1} tokens/s in total, {:.2}× the same 4 one after another ({one_after_another:.1} tokens/s; prompt processing included in both), {:.2}× one request's generation rate {single:.1}; {:.2} generations per pass on average ({count} passes: {passes:?})",
        batched / one_after_another,
        batched / single,
        steps as f64 / count.max(1) as f64,
    );
    println!(
        "the same 4 taking turns pass by pass (batching off): {taking_turns:.1} tokens/s, {:.2}× one after another; batching gives {:.2}× taking turns",
        taking_turns / one_after_another,
        batched / taking_turns
    );
    Ok(())
}

/// Greedy, at most `tokens` tokens. The rates are per token generated, so a generation
/// that reaches its end of text early (llama.cpp's side ignores it) still compares.
fn fixed(tokens: usize) -> GenerateOptions {
    GenerateOptions::greedy(tokens)
}

fn measure(model: &GgufModel, prompt: &str, tokens: usize, runs: usize) -> Result<Speed> {
    let mut prompt_rates = Vec::new();
    let mut generation_rates = Vec::new();
    let mut prompt_tokens = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let mut first: Option<Instant> = None;
        let mut last = started;
        let generation = model.generate_streaming(prompt, &fixed(tokens), &mut |t| {
            let now = Instant::now();
            if t.len() == 1 {
                first = Some(now);
            }
            last = now;
        })?;
        prompt_tokens = generation.prompt_tokens;
        let first = first.context("no token generated")?;
        if generation.tokens.len() < 2 {
            bail!(
                "the model stopped after {} tokens: pick a prompt it continues",
                generation.tokens.len()
            );
        }
        prompt_rates.push(prompt_tokens as f64 / (first - started).as_secs_f64());
        generation_rates.push((generation.tokens.len() - 1) as f64 / (last - first).as_secs_f64());
    }
    Ok(Speed {
        prompt_tokens,
        prompt_per_second: median(prompt_rates),
        generated_per_second: median(generation_rates),
    })
}

fn llama_cpp(
    python: &std::path::Path,
    model: &std::path::Path,
    threads: usize,
    prompt: &str,
    tokens: usize,
    runs: usize,
) -> Result<Speed> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/llamacpp_baseline.py"
    );
    let output = std::process::Command::new(python)
        .arg(script)
        .arg("--model")
        .arg(model)
        .args(["--threads", &threads.to_string()])
        .args(["--prompt", prompt])
        .args(["--n-predict", &tokens.to_string()])
        .args(["--runs", &runs.to_string()])
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {script} with {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the llama.cpp baseline failed (install it with scripts/bench-inference.sh): {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let mut prompt_rates = Vec::new();
    let mut generation_rates = Vec::new();
    let mut prompt_tokens = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let run: serde_json::Value = serde_json::from_str(line)?;
        prompt_tokens = run["prompt_tokens"].as_u64().unwrap_or(0) as usize;
        prompt_rates.push(run["prompt_per_second"].as_f64().unwrap_or(f64::NAN));
        generation_rates.push(run["predicted_per_second"].as_f64().unwrap_or(f64::NAN));
    }
    if prompt_rates.is_empty() {
        bail!("the llama.cpp baseline printed no run");
    }
    Ok(Speed {
        prompt_tokens,
        prompt_per_second: median(prompt_rates),
        generated_per_second: median(generation_rates),
    })
}

/// This process's resident set in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::vm_rss_kib(&s))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
