//! `murmur task watch ID`: one task's lifecycle as the log records it, and its running
//! attempt's progress as the agent publishes it on the live plane, until the task ends.
//!
//! Progress is shown only when it is signed by the agent the task is assigned to, for the
//! attempt it holds: a message with a good signature from anyone else is reported as ignored
//! (the signature proves who sent it, the log says whether they hold the task).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{FutureExt as _, StreamExt as _};
use murmur_coordination::tasks::{Task, TaskProjection, TaskState};
use murmur_subjects::events::TaskProgress;
use murmur_subjects::{EventType, Projector, Token};

use crate::settings::Settings;

/// How long a progress message may wait for the log to show its sender holding the task
/// (the assignment can reach this watcher after the first progress).
const HOLDER_GRACE: Duration = Duration::from_secs(2);

/// Longest partial output shown on one progress line.
const SHOWN_CHARS: usize = 100;

/// Watches task `id` until it ends (or `timeout` passes). Succeeds when it completed,
/// printing its output; fails with the reason otherwise.
pub async fn run(settings: &Settings, id: &str, timeout: Option<Duration>) -> Result<()> {
    let log = settings.open_log("murmur-task-watch").await?;
    let token = Token::new(id)?;
    // Subscribed (and the server told) before the log is read: progress sent from the
    // moment the task could have started is heard.
    let subject = EventType::of::<TaskProgress>().subject(log.realm(), &token);
    let mut progress = log.client().subscribe(subject.to_string()).await?;
    log.client().flush().await?;
    let mut view = Projector::new(
        log.clone(),
        TaskProjection {
            realm: settings.realm.clone(),
        },
    );
    let began = Instant::now();
    let mut shown_state = String::new();
    let mut shown_failures = 0;
    let mut shown_questions = 0;
    let mut heard: Vec<(Instant, String, TaskProgress)> = Vec::new();
    loop {
        view.poll(Duration::from_millis(100)).await?;
        let task = view.state().tasks.get(id).cloned();
        let line = match &task {
            None => format!("{id}: not in the log yet; waiting"),
            Some(t) => state_line(id, t),
        };
        if let Some(t) = &task {
            for failure in t.failures.iter().skip(shown_failures) {
                out!("{id}: an attempt failed: {}", first_line(failure));
            }
            shown_failures = t.failures.len();
            for q in t.questions.iter().skip(shown_questions) {
                out!(
                    "{id}: attempt {} asks ({}): {} — answer with `murmur task answer {id} {} TEXT`",
                    q.attempt,
                    q.id,
                    q.prompt,
                    q.id
                );
            }
            shown_questions = t.questions.len();
        }
        if line != shown_state {
            out!("{line}");
            shown_state = line;
        }
        while let Some(Some(msg)) = progress.next().now_or_never() {
            match log
                .codec()
                .decode(msg.subject.as_str(), msg.headers.as_ref(), &msg.payload)
            {
                Ok(ev) => match ev.payload::<TaskProgress>() {
                    Ok(p) => heard.push((Instant::now(), ev.emitter().to_string(), p)),
                    Err(e) => out!("{id}: refused a progress message: {e}"),
                },
                Err(e) => out!("{id}: refused a progress message: {e}"),
            }
        }
        heard.retain(|(at, emitter, p)| {
            let holds = task.as_ref().is_some_and(|t| {
                t.attempt == p.attempt
                    && matches!(&t.state, TaskState::Assigned { agent, .. } if agent == emitter)
            });
            if holds {
                out!("{id}: {}", progress_line(p));
                return false;
            }
            if at.elapsed() > HOLDER_GRACE {
                out!(
                    "{id}: ignored progress from {}: it does not hold attempt {}",
                    short(emitter),
                    p.attempt
                );
                return false;
            }
            true
        });
        if let Some(t) = task.filter(|t| t.state.is_final()) {
            return finish(id, &t);
        }
        if timeout.is_some_and(|limit| began.elapsed() > limit) {
            bail!(
                "task {id} did not end within {} s",
                timeout.unwrap_or_default().as_secs()
            );
        }
    }
}

/// The output of a completed task as one line of JSON; an error naming the end otherwise.
fn finish(id: &str, task: &Task) -> Result<()> {
    match &task.state {
        TaskState::Completed { .. } => {
            let output = task.output.clone().unwrap_or(serde_json::Value::Null);
            out!("{}", serde_json::to_string(&output)?);
            Ok(())
        }
        other => bail!(
            "task {id} ended {}{}",
            other.name(),
            task.failures
                .last()
                .map(|f| format!(": {}", first_line(f)))
                .unwrap_or_default()
        ),
    }
}

/// One line for the task's state.
fn state_line(id: &str, task: &Task) -> String {
    let attempt = format!("attempt {} of {}", task.attempt.max(1), task.max_attempts);
    match &task.state {
        TaskState::Pending { .. } => format!(
            "{id}: pending ({attempt}), waiting for an agent that runs {} tasks",
            task.requirements.capability
        ),
        TaskState::Assigned {
            agent,
            started: false,
            ..
        } => format!("{id}: assigned to {} ({attempt})", short(agent)),
        TaskState::Assigned {
            agent,
            started: true,
            ..
        } => format!("{id}: running on {} ({attempt})", short(agent)),
        TaskState::Completed { agent } => format!("{id}: completed by {}", short(agent)),
        TaskState::DeadLettered => format!(
            "{id}: dead-lettered after {} failed attempts",
            task.failures.len()
        ),
        TaskState::Cancelled => format!("{id}: cancelled"),
    }
}

/// `done/total · message`, the message cut to its last [`SHOWN_CHARS`] characters on one
/// line (an inference agent's text so far grows at the end).
fn progress_line(p: &TaskProgress) -> String {
    let mut parts = Vec::new();
    match (p.done, p.total) {
        (Some(done), Some(total)) => parts.push(format!("{done}/{total}")),
        (Some(done), None) => parts.push(done.to_string()),
        _ => {}
    }
    if let Some(message) = &p.message {
        // One line, and nothing a terminal would act on.
        let flat: String = message
            .chars()
            .map(|c| match c {
                '\n' => '⏎',
                c if c.is_control() => '\u{fffd}',
                c => c,
            })
            .collect();
        let count = flat.chars().count();
        let shown: String = if count > SHOWN_CHARS {
            let tail: String = flat.chars().skip(count - SHOWN_CHARS).collect();
            format!("…{tail}")
        } else {
            flat
        };
        parts.push(shown);
    }
    format!("progress: {}", parts.join(" · "))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn short(agent: &str) -> &str {
    &agent[..agent.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_show_counts_and_the_end_of_long_messages() {
        let p = TaskProgress {
            attempt: 1,
            done: Some(3),
            total: Some(16),
            message: Some("one\ntwo\u{7}".into()),
        };
        assert_eq!(progress_line(&p), "progress: 3/16 · one⏎two\u{fffd}");
        let long = TaskProgress {
            message: Some(format!("{}END", "x".repeat(200))),
            done: None,
            total: None,
            ..p
        };
        let line = progress_line(&long);
        assert!(line.ends_with("xxEND") && line.contains('…'), "{line}");
        assert_eq!(
            line.chars().count(),
            "progress: …".chars().count() + SHOWN_CHARS
        );
    }
}
