//! A replica's outbox: changes sealed locally and not yet acknowledged by the server, in
//! order. In memory by default; given a folder ([`crate::ReplicaConfig::outbox_dir`]), each
//! change is also written there before it counts as pending and removed once acknowledged,
//! so edits made while cut off from the servers survive the process: the next replica
//! opened on that folder publishes them.
//!
//! One file per change, `NNNNNNNNNNNNNNNNNNNN-<event id>.event` (the counter keeps the order
//! Automerge's dependencies need): the subject on the first line, then the signed CloudEvent
//! in structured mode, byte for byte as it will be published. A file is
//! written under a temporary name, synced and renamed, so a crash leaves either the whole
//! change or none of it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use murmur_subjects::binding::{self, ContentMode};
use murmur_subjects::{SealedEvent, Subject};

use crate::KnowledgeError;

/// Suffix of a change file still being written.
const PARTIAL: &str = ".partial";

/// The changes waiting for the server's acknowledgement.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    entries: VecDeque<(SealedEvent, Option<PathBuf>)>,
    dir: Option<PathBuf>,
    next: u64,
}

impl Outbox {
    /// An outbox that lives as long as the process.
    pub(crate) fn in_memory() -> Self {
        Self::default()
    }

    /// An outbox kept in `dir` (created if missing), holding the changes an earlier
    /// process left there, in their order. A file that does not hold a change is an error
    /// naming it: the changes after it may depend on it.
    pub(crate) fn durable(dir: &Path) -> Result<Self, KnowledgeError> {
        let failed = |path: &Path, reason: String| KnowledgeError::Outbox {
            path: path.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e.to_string()))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| failed(dir, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let mut outbox = Self {
            dir: Some(dir.to_path_buf()),
            ..Self::default()
        };
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.ends_with(PARTIAL) {
                // Never reported as pending: the process died while writing it, and the
                // edit it holds was never confirmed to anyone.
                std::fs::remove_file(&file).map_err(|e| failed(&file, e.to_string()))?;
                continue;
            }
            let Some(counter) = name.split('-').next().and_then(|n| n.parse::<u64>().ok()) else {
                return Err(failed(&file, "not an outbox change file".into()));
            };
            let bytes = std::fs::read(&file).map_err(|e| failed(&file, e.to_string()))?;
            let event = decode(&bytes).map_err(|reason| failed(&file, reason))?;
            outbox.next = outbox.next.max(counter + 1);
            outbox.entries.push_back((event, Some(file)));
        }
        Ok(outbox)
    }

    /// How many changes wait.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The changes, oldest first.
    pub(crate) fn events(&self) -> impl Iterator<Item = &SealedEvent> {
        self.entries.iter().map(|(event, _)| event)
    }

    /// Adds a change; with a folder, it is on disk when this returns.
    pub(crate) fn push(&mut self, event: SealedEvent) -> Result<(), KnowledgeError> {
        let file = match &self.dir {
            Some(dir) => Some(write(dir, self.next, &event)?),
            None => None,
        };
        self.next += 1;
        self.entries.push_back((event, file));
        Ok(())
    }

    /// Drops the `count` oldest changes, which the server acknowledged.
    pub(crate) fn acknowledged(&mut self, count: usize) -> Result<(), KnowledgeError> {
        for (_, file) in self.entries.drain(..count.min(self.entries.len())) {
            if let Some(file) = file {
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // Left behind it is published again later: same id, the server
                    // stores it once.
                    Err(e) => {
                        return Err(KnowledgeError::Outbox {
                            path: file,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// The file's bytes for `event`: its subject on the first line, then the CloudEvent in
/// structured mode, byte for byte as signed (data is never re-serialised).
fn encode(event: &SealedEvent) -> Result<Vec<u8>, String> {
    let (_, body) = binding::encode(&event.record, ContentMode::Structured, usize::MAX)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(event.subject.as_str().len() + 1 + body.len());
    out.extend_from_slice(event.subject.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// The change a file holds.
fn decode(bytes: &[u8]) -> Result<SealedEvent, String> {
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no subject line")?;
    let subject = std::str::from_utf8(&bytes[..split])
        .ok()
        .and_then(|s| Subject::parse(s).ok())
        .ok_or("the first line is not a subject")?;
    let body = Bytes::copy_from_slice(&bytes[split + 1..]);
    let record = binding::decode(None::<&murmur_subjects::Headers>, &body, usize::MAX)
        .map_err(|e| e.to_string())?;
    // A knowledge change is addressed to no one participant.
    Ok(SealedEvent {
        subject,
        record,
        recipient: None,
    })
}

/// Writes `event` as change number `counter` in `dir`: temporary name, sync, rename.
fn write(dir: &Path, counter: u64, event: &SealedEvent) -> Result<PathBuf, KnowledgeError> {
    let name = format!("{counter:020}-{}.event", event.record.id);
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}{PARTIAL}"));
    let failed = |reason: String| KnowledgeError::Outbox {
        path: path.clone(),
        reason,
    };
    let bytes = encode(event).map_err(failed)?;
    let mut file = std::fs::File::create(&partial).map_err(|e| failed(e.to_string()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&partial, &path).map_err(|e| failed(e.to_string()))?;
    // The rename is durable once the folder is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(e.to_string()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_subjects::events::KnowledgeChanged;
    use murmur_subjects::{Draft, EventCodec, Identity, Token};

    fn sealed(identity: &Identity, n: u32) -> SealedEvent {
        let draft = Draft::new(
            Token::new("d-1").expect("token"),
            &KnowledgeChanged {
                space: "field".into(),
                change: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("change-{n}"),
                ),
            },
        )
        .expect("a draft")
        .with_id(format!("kc-{n}"));
        draft.seal(identity, &Token::new("acme").expect("token"))
    }

    #[test]
    fn changes_outlive_the_outbox_in_order_until_acknowledged() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let me = Identity::generate();
        let mut outbox = Outbox::durable(dir.path()).expect("opens");
        for n in 0..12 {
            outbox.push(sealed(&me, n)).expect("written");
        }
        drop(outbox);
        // A write cut short by a crash is not a change.
        std::fs::write(dir.path().join(format!("x{PARTIAL}")), b"{\"subj").expect("junk");

        let mut reopened = Outbox::durable(dir.path()).expect("reopens");
        let ids: Vec<&str> = reopened.events().map(|e| e.record.id.as_str()).collect();
        let expected: Vec<String> = (0..12).map(|n| format!("kc-{n}")).collect();
        assert_eq!(ids, expected);
        // What comes back verifies as what was signed.
        let codec = EventCodec::default();
        for event in reopened.events() {
            let (headers, body) =
                binding::encode(&event.record, ContentMode::Structured, usize::MAX)
                    .expect("encodes");
            codec
                .decode(event.subject.as_str(), Some(&headers), &body)
                .expect("the signature still verifies");
        }
        reopened.acknowledged(5).expect("removed");
        reopened.push(sealed(&me, 99)).expect("written");
        drop(reopened);

        let last = Outbox::durable(dir.path()).expect("reopens");
        let ids: Vec<&str> = last.events().map(|e| e.record.id.as_str()).collect();
        assert_eq!(ids.len(), 8, "{ids:?}");
        assert_eq!(ids.first(), Some(&"kc-5"));
        assert_eq!(
            ids.last(),
            Some(&"kc-99"),
            "new changes go after the restored ones"
        );
    }

    #[test]
    fn a_file_that_is_not_a_change_is_named() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("00000000000000000000-kc-1.event"), b"{}").expect("junk");
        match Outbox::durable(dir.path()) {
            Err(KnowledgeError::Outbox { path, .. }) => {
                assert!(
                    path.ends_with("00000000000000000000-kc-1.event"),
                    "{path:?}"
                )
            }
            other => panic!("expected an outbox error, got {other:?}"),
        }
    }
}
