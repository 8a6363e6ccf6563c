//! An agent's own counters: what it ran, what is running, whether it takes new work.
//!
//! They are served three ways: in `$SRV.STATS` (the `data` of the agent's `status`
//! endpoint, so stock NATS service tooling shows them), as the reply of that endpoint, and
//! as Prometheus text ([`AgentMetrics::prometheus_text`]) for an opt-in scrape endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Counters of one agent.
#[derive(Debug)]
pub struct AgentMetrics {
    agent: String,
    kind: String,
    started: Instant,
    attempts_started: Counter,
    attempts_completed: Counter,
    attempts_failed: Counter,
    attempts_cancelled: Counter,
    running: Gauge,
    lame_duck: AtomicBool,
    heartbeats: AtomicU64,
    /// Whether it runs a language model: its generation counters are exported then.
    generates: AtomicBool,
    prompt_tokens: Counter,
    generated_tokens: Counter,
    generation_seconds: Counter<f64, AtomicU64>,
}

/// Language-model work of an inference agent, in a [`MetricsSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSnapshot {
    /// Prompt tokens read.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Seconds spent generating (prompt and answer), summed over generations.
    pub seconds: f64,
}

impl GenerationSnapshot {
    /// Tokens generated per second spent generating.
    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.generated_tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// A point-in-time copy of [`AgentMetrics`], as JSON in `$SRV.STATS` and `murmur status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Agent id (public key).
    pub agent: String,
    /// Agent kind.
    pub kind: String,
    /// Seconds since it joined.
    pub uptime_s: u64,
    /// Attempts it started.
    pub attempts_started: u64,
    /// Attempts it completed.
    pub attempts_completed: u64,
    /// Attempts that failed.
    pub attempts_failed: u64,
    /// Attempts stopped by a cancellation.
    pub attempts_cancelled: u64,
    /// Attempts running now.
    pub running: i64,
    /// Whether it refuses new work.
    pub lame_duck: bool,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Language-model work, for an agent that runs a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationSnapshot>,
}

impl AgentMetrics {
    /// Fresh counters for `agent` of `kind`.
    pub fn new(agent: &str, kind: &str) -> Self {
        Self {
            agent: agent.into(),
            kind: kind.into(),
            started: Instant::now(),
            attempts_started: Counter::default(),
            attempts_completed: Counter::default(),
            attempts_failed: Counter::default(),
            attempts_cancelled: Counter::default(),
            running: Gauge::default(),
            lame_duck: AtomicBool::new(false),
            heartbeats: AtomicU64::new(0),
            generates: AtomicBool::new(false),
            prompt_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            generation_seconds: Counter::default(),
        }
    }

    /// Marks the agent as one that runs a language model: its generation counters are
    /// exported from now on, at zero until the first generation.
    pub fn count_generations(&self) {
        self.generates.store(true, Ordering::SeqCst);
    }

    /// A generation ended: `prompt_tokens` read, `generated` tokens written, in `seconds`.
    pub fn generation_done(&self, prompt_tokens: u64, generated: u64, seconds: f64) {
        self.count_generations();
        self.prompt_tokens.inc_by(prompt_tokens);
        self.generated_tokens.inc_by(generated);
        self.generation_seconds.inc_by(seconds.max(0.0));
    }

    /// An attempt started.
    pub fn attempt_started(&self) {
        self.attempts_started.inc();
        self.running.inc();
    }

    /// An attempt ended: `Some(true)` completed, `Some(false)` failed, `None` cancelled.
    pub fn attempt_ended(&self, outcome: Option<bool>) {
        self.running.dec();
        match outcome {
            Some(true) => self.attempts_completed.inc(),
            Some(false) => self.attempts_failed.inc(),
            None => self.attempts_cancelled.inc(),
        };
    }

    /// Attempts running now.
    pub fn running(&self) -> u32 {
        self.running.get().max(0) as u32
    }

    pub(crate) fn set_lame_duck(&self) {
        self.lame_duck.store(true, Ordering::SeqCst);
    }

    pub(crate) fn heartbeat_sent(&self) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            agent: self.agent.clone(),
            kind: self.kind.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            attempts_started: self.attempts_started.get(),
            attempts_completed: self.attempts_completed.get(),
            attempts_failed: self.attempts_failed.get(),
            attempts_cancelled: self.attempts_cancelled.get(),
            running: self.running.get(),
            lame_duck: self.lame_duck.load(Ordering::SeqCst),
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            generation: self
                .generates
                .load(Ordering::SeqCst)
                .then(|| GenerationSnapshot {
                    prompt_tokens: self.prompt_tokens.get(),
                    generated_tokens: self.generated_tokens.get(),
                    seconds: self.generation_seconds.get(),
                }),
        }
    }

    /// The counters in the Prometheus text exposition format, labelled with the agent id
    /// and kind.
    pub fn prometheus_text(&self) -> String {
        let mut registry = Registry::with_prefix_and_labels(
            "murmur_agent",
            [
                ("agent".into(), self.agent.clone().into()),
                ("kind".into(), self.kind.clone().into()),
            ]
            .into_iter(),
        );
        registry.register(
            "attempts_started",
            "Task attempts started",
            self.attempts_started.clone(),
        );
        registry.register(
            "attempts_completed",
            "Task attempts completed",
            self.attempts_completed.clone(),
        );
        registry.register(
            "attempts_failed",
            "Task attempts that failed",
            self.attempts_failed.clone(),
        );
        registry.register(
            "attempts_cancelled",
            "Task attempts stopped by a cancellation",
            self.attempts_cancelled.clone(),
        );
        registry.register("running", "Task attempts running now", self.running.clone());
        let lame: Gauge = Gauge::default();
        lame.set(i64::from(self.lame_duck.load(Ordering::SeqCst)));
        registry.register("lame_duck", "1 when the agent refuses new work", lame);
        let uptime: Gauge = Gauge::default();
        uptime.set(self.started.elapsed().as_secs() as i64);
        registry.register("uptime_seconds", "Seconds since the agent joined", uptime);
        if self.generates.load(Ordering::SeqCst) {
            registry.register(
                "prompt_tokens",
                "Prompt tokens its model read",
                self.prompt_tokens.clone(),
            );
            registry.register(
                "generated_tokens",
                "Tokens its model generated",
                self.generated_tokens.clone(),
            );
            registry.register(
                "generation_seconds",
                "Seconds its model spent generating",
                self.generation_seconds.clone(),
            );
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_attempts_and_render_as_prometheus_text() {
        let m = AgentMetrics::new("UABC", "compiler");
        m.attempt_started();
        m.attempt_started();
        m.attempt_started();
        m.attempt_ended(Some(true));
        m.attempt_ended(Some(false));
        let s = m.snapshot();
        assert_eq!(
            (
                s.attempts_started,
                s.attempts_completed,
                s.attempts_failed,
                s.running
            ),
            (3, 1, 1, 1)
        );
        m.attempt_ended(None);
        assert_eq!(m.snapshot().attempts_cancelled, 1);
        assert_eq!(m.running(), 0);
        let text = m.prometheus_text();
        assert!(
            text.contains(
                r#"murmur_agent_attempts_completed_total{agent="UABC",kind="compiler"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE murmur_agent_running gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("generated_tokens"), "{text}");
        assert_eq!(m.snapshot().generation, None);
    }

    #[test]
    fn an_agent_running_a_model_counts_its_tokens() {
        let m = AgentMetrics::new("UABC", "inference");
        m.count_generations();
        assert_eq!(
            m.snapshot().generation,
            Some(GenerationSnapshot {
                prompt_tokens: 0,
                generated_tokens: 0,
                seconds: 0.0
            })
        );
        m.generation_done(10, 30, 0.5);
        m.generation_done(5, 10, 0.5);
        let g = m.snapshot().generation.expect("counted");
        assert_eq!((g.prompt_tokens, g.generated_tokens), (15, 40));
        assert!((g.tokens_per_second() - 40.0).abs() < 1e-9);
        let text = m.prometheus_text();
        assert!(
            text.contains(
                r#"murmur_agent_generated_tokens_total{agent="UABC",kind="inference"} 40"#
            ),
            "{text}"
        );
        assert!(
            text.contains("murmur_agent_generation_seconds_total"),
            "{text}"
        );
    }
}
