//! The inference suite: murmur's model runner (candle, as an inference agent runs it) and
//! llama.cpp (PyPI `xllamacpp`, run by `scripts/llamacpp_baseline.py`) on the same GGUF
//! file, thread count, prompts and token counts, in one run. Greedy decoding, a fixed
//! number of tokens (the end of text does not stop either side).
//!
//! Figures: prompt processing and generation tokens/s for murmur as it loads models (a
//! llama's projections through `murmur-matmul`, other weights without fast kernels
//! requantized to Q8_0), for candle's own model on the weights as stored (the floor), llama.cpp's,
//! the ratios, four concurrent requests on one loaded model, and the memory the loaded model
//! adds to the process. The three take turns run by run (murmur, the floor, llama.cpp, then
//! again), so a machine that speeds up or slows down over the suite (a shared VM's memory
//! bandwidth does) moves all three alike; the figures are the medians. The four concurrent
//! requests take turns the same way with their baselines.

use std::io::{BufRead, Write};
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
    // Each side's thread pool spins a while after its work before it parks: a pause
    // between turns keeps one side's spinning threads off the other's cores.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(200));
    // Generation, murmur over llama.cpp, run by run: how far apart the pairs are.
    let mut spreads = Vec::new();
    for prompt in prompts {
        let mut baseline = match python {
            Some(python) => Some(LlamaCpp::start(python, model, threads, prompt, tokens)?),
            None => None,
        };
        let (mut murmur, mut floor, mut llama) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            murmur.push(measure(&fast, prompt, tokens)?);
            settle();
            floor.push(measure(&stored, prompt, tokens)?);
            settle();
            if let Some(baseline) = &mut baseline {
                llama.push(baseline.run()?);
                settle();
            }
        }
        if !llama.is_empty() {
            let ratios: Vec<f64> = murmur
                .iter()
                .zip(&llama)
                .map(|(m, l)| m.generated_per_second / l.generated_per_second)
                .collect();
            let (low, high) = ratios
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                    (lo.min(*r), hi.max(*r))
                });
            spreads.push(format!(
                "{} prompt tokens {low:.2}–{high:.2}",
                murmur[0].prompt_tokens
            ));
        }
        let llama = (!llama.is_empty()).then(|| median_speed(llama));
        rows.push((prompt, median_speed(murmur), median_speed(floor), llama));
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
    if !spreads.is_empty() {
        println!(
            "generation, murmur / llama.cpp, run by run (taking turns): {}",
            spreads.join("; ")
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
    // Taking turns run by run, as the single requests do: one invocation's batched run
    // against its own sequential run gave 2.32× where the next gave 1.90×.
    let (mut sequential, mut side_by_side, mut turns_rates) = (Vec::new(), Vec::new(), Vec::new());
    // The batched runs' passes by size (how many generations each held).
    let mut passes = std::collections::BTreeMap::new();
    for _ in 0..runs.max(1) {
        sequential.push(four(&fast, false)?);
        settle();
        let before = fast.passes_by_size();
        side_by_side.push(four(&fast, true)?);
        for (size, count) in fast.passes_by_size() {
            let new = count - before.get(&size).copied().unwrap_or(0);
            if new > 0 {
                *passes.entry(size).or_insert(0) += new;
            }
        }
        settle();
        turns_rates.push(four(&turns, true)?);
        settle();
    }
    let ratios: Vec<f64> = side_by_side
        .iter()
        .zip(&sequential)
        .map(|(batched, sequential)| batched / sequential)
        .collect();
    let (low, high) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(*r), hi.max(*r))
        });
    let one_after_another = median(sequential);
    let batched = median(side_by_side);
    let taking_turns = median(turns_rates);
    let (steps, count) = passes.iter().fold((0, 0), |(steps, count), (size, n)| {
        (steps + size * *n as usize, count + n)
    });
    println!(
        "\n4 concurrent requests on one model, batched: {batched:.1} tokens/s in total, {:.2}× the same 4 one after another ({one_after_another:.1} tokens/s; prompt processing included in both; medians of {}, run by run {low:.2}–{high:.2}×), {:.2}× one request's generation rate {single:.1}; {:.2} generations per pass on average ({count} passes: {passes:?})",
        batched / one_after_another,
        ratios.len(),
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

/// One greedy generation of `tokens` tokens.
fn measure(model: &GgufModel, prompt: &str, tokens: usize) -> Result<Speed> {
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
    let first = first.context("no token generated")?;
    if generation.tokens.len() < 2 {
        bail!(
            "the model stopped after {} tokens: pick a prompt it continues",
            generation.tokens.len()
        );
    }
    Ok(Speed {
        prompt_tokens: generation.prompt_tokens,
        prompt_per_second: generation.prompt_tokens as f64 / (first - started).as_secs_f64(),
        generated_per_second: (generation.tokens.len() - 1) as f64 / (last - first).as_secs_f64(),
    })
}

/// The median of each rate over `runs` (at least one).
fn median_speed(runs: Vec<Speed>) -> Speed {
    Speed {
        prompt_tokens: runs.first().map_or(0, |r| r.prompt_tokens),
        prompt_per_second: median(runs.iter().map(|r| r.prompt_per_second).collect()),
        generated_per_second: median(runs.iter().map(|r| r.generated_per_second).collect()),
    }
}

/// llama.cpp with the model loaded, in `scripts/llamacpp_baseline.py`, making one greedy
/// generation of `tokens` tokens each time it is asked.
struct LlamaCpp {
    child: std::process::Child,
    requests: std::process::ChildStdin,
    replies: std::io::BufReader<std::process::ChildStdout>,
    /// Its last lines on stderr, read as they come (a full pipe would stop it).
    said: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    reading_said: Option<std::thread::JoinHandle<()>>,
}

impl LlamaCpp {
    fn start(
        python: &std::path::Path,
        model: &std::path::Path,
        threads: usize,
        prompt: &str,
        tokens: usize,
    ) -> Result<Self> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/llamacpp_baseline.py"
        );
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg("--model")
            .arg(model)
            .args(["--threads", &threads.to_string()])
            .args(["--prompt", prompt])
            .args(["--n-predict", &tokens.to_string()])
            .arg("--on-request")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {script} with {}", python.display()))?;
        let (Some(requests), Some(replies), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            bail!("the llama.cpp baseline's pipes were not set up");
        };
        let said = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let tail = said.clone();
        let reading_said = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.push_back(line);
                if tail.len() > 5 {
                    tail.pop_front();
                }
            }
        });
        let mut baseline = Self {
            child,
            requests,
            replies: std::io::BufReader::new(replies),
            said,
            reading_said: Some(reading_said),
        };
        // Its first line says the model is loaded: nothing is measured while it loads.
        baseline.reply()?;
        Ok(baseline)
    }

    /// One generation.
    fn run(&mut self) -> Result<Speed> {
        let asked = writeln!(self.requests, "run").and_then(|()| self.requests.flush());
        if asked.is_err() {
            return self.failed();
        }
        let run = self.reply()?;
        Ok(Speed {
            prompt_tokens: run["prompt_tokens"].as_u64().unwrap_or(0) as usize,
            prompt_per_second: run["prompt_per_second"].as_f64().unwrap_or(f64::NAN),
            generated_per_second: run["predicted_per_second"].as_f64().unwrap_or(f64::NAN),
        })
    }

    /// Its next line on stdout, a JSON object.
    fn reply(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.replies.read_line(&mut line)? == 0 {
            return self.failed();
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// It exited: an error with what it said on the way out.
    fn failed<T>(&mut self) -> Result<T> {
        let _ = self.child.wait();
        if let Some(reading) = self.reading_said.take() {
            let _ = reading.join();
        }
        let said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        bail!(
            "the llama.cpp baseline failed (install it with scripts/bench-inference.sh): {}",
            said.iter().cloned().collect::<Vec<_>>().join(" | ")
        )
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's resident set in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::vm_rss_kib(&s))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
