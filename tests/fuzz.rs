//! Hostile input: every decoder murmur runs on bytes from outside is fed inputs that bolero's
//! engine generates (it runs in `cargo test` on the stable toolchain): valid seeds — built
//! here from the code and read from the committed corpus in `tests/fuzz/corpus/TARGET/` —
//! put through byte edits (bit flips, overwrites, insertions, deletions, JSON tokens, splices
//! of other seeds), and raw random bytes. Each decoder must answer with a value or a typed
//! error: a panic fails the target, and so does one input taking longer than
//! [`SLOW_INPUT`] (a hang).
//!
//! `MURMUR_FUZZ_ITERATIONS` sets the inputs per target (default 3,000 here; the recorded
//! run in docs/reliability.md is 1,000,000 per target with `--release`). A failure prints
//! `BOLERO_RANDOM_SEED=…`, which reproduces it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use murmur_subjects::binding::{self, ContentMode};
use murmur_subjects::events::{
    AgentJoined, Hardware, KnowledgeChanged, ProposalOpened, Protocol, TaskCompleted,
    TaskSubmitted, VoteCast,
};
use murmur_subjects::{
    Catalog, Draft, EventCodec, Headers, Identity, Subject, SubjectFilter, Token,
};

/// Longer than this for one input counts as a hang.
const SLOW_INPUT: Duration = Duration::from_secs(2);

fn iterations() -> usize {
    std::env::var("MURMUR_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// Tokens worth inserting into JSON and TOML: structure, escapes, huge numbers, versions.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\"v\":99,",
    b"\"v\":0,",
    b"=",
    b"\n[[",
    b"..",
    b"../",
    b"*",
    b">",
    b".",
    b"\xff\xfe",
    b"\x00",
    b"\"data_base64\":\"AA\",",
    b"\"specversion\":\"0.3\",",
];

/// A generated input: which seed (`None` of the seeds when past their count: the raw bytes
/// alone), the edits to apply, and raw bytes.
type Input = (u16, Vec<(u8, u16, u8)>, Vec<u8>);

/// Applies an input's edits to its seed.
fn mutate(seeds: &[Vec<u8>], (seed, edits, raw): &Input) -> Vec<u8> {
    if seeds.is_empty() || usize::from(*seed) % (seeds.len() + 1) == seeds.len() {
        return raw.clone();
    }
    let mut bytes = seeds[usize::from(*seed) % (seeds.len() + 1)].clone();
    // Few edits most of the time (half the inputs one, a quarter two, …), so most inputs
    // stay close enough to valid to reach the deeper checks.
    let count = 1 + ((seed >> 4) | 0x0100).trailing_zeros() as usize;
    for &(op, at, byte) in edits.iter().take(count) {
        let len = bytes.len();
        let at = if len == 0 {
            0
        } else {
            usize::from(at) % (len + 1)
        };
        match op % 7 {
            0 if at < len => bytes[at] ^= 1 << (byte % 8),
            1 if at < len => bytes[at] = byte,
            2 => bytes.insert(at, byte),
            3 => {
                let end = (at + 1 + usize::from(byte % 16)).min(len);
                bytes.drain(at.min(end)..end);
            }
            4 => {
                let token = TOKENS[usize::from(byte) % TOKENS.len()];
                bytes.splice(at..at, token.iter().copied());
            }
            5 => {
                let other = &seeds[usize::from(byte) % seeds.len()];
                let from = usize::from(byte) * 7 % (other.len() + 1);
                let piece = &other[from..(from + 24).min(other.len())];
                bytes.splice(at..at, piece.iter().copied());
            }
            _ => bytes.extend_from_slice(&raw[..raw.len().min(32)]),
        }
    }
    bytes
}

/// The committed corpus of `target` (every file in `tests/fuzz/corpus/TARGET/`).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

/// Runs `decode` over generated inputs built from `seeds` plus the corpus of `target`;
/// `decode` names each input's outcome (`ok`, or the error's kind), and the counts are
/// printed, so a run shows how deep the inputs reached.
fn fuzz(
    target: &str,
    mut seeds: Vec<Vec<u8>>,
    decode: impl Fn(&[u8]) -> &'static str + std::panic::RefUnwindSafe,
) {
    seeds.extend(corpus(target));
    let count = iterations();
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<&'static str, u64>::new());
    let began_all = Instant::now();
    bolero::check!()
        .with_type::<Input>()
        .with_iterations(count)
        .for_each(|input| {
            let bytes = mutate(&seeds, input);
            let began = Instant::now();
            let outcome = decode(&bytes);
            let took = began.elapsed();
            assert!(
                took < SLOW_INPUT,
                "{target}: one input took {took:?} ({} bytes)",
                bytes.len()
            );
            if let Ok(mut o) = outcomes.lock() {
                *o.entry(outcome).or_default() += 1;
            }
        });
    let outcomes = outcomes.into_inner().unwrap_or_default();
    eprintln!(
        "fuzz {target}: {count} inputs in {:.1} s, no panic, none slower than {SLOW_INPUT:?}; outcomes {outcomes:?}",
        began_all.elapsed().as_secs_f64()
    );
}

/// The outcome of a result: `ok` or `error`.
fn ok_or<T, E>(r: &Result<T, E>) -> &'static str {
    if r.is_ok() { "ok" } else { "error" }
}

fn identity() -> Identity {
    let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [7; 32]).expect("a key");
    Identity::from_seed(&pair.seed().expect("seed")).expect("the seed loads")
}

/// Sealed events of several types, as (subject, structured body, binary headers + body).
fn sealed_events() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let me = identity();
    let realm = Token::new("acme").expect("token");
    let key = Token::new(me.public_key()).expect("token");
    let t1 = Token::new("t-1").expect("token");
    let p1 = Token::new("p-1").expect("token");
    let drafts = vec![
        Draft::new(
            key.clone(),
            &AgentJoined {
                name: "w".into(),
                kind: "worker".into(),
                capabilities: vec!["text.upper".into()],
                labels: [("zone".to_string(), "a".to_string())].into(),
                agent_version: "1".into(),
                hardware: Hardware::default(),
                slots: 2,
                handles: Some(vec!["dev.murmur.task.assigned".into()]),
            },
        ),
        Draft::new(
            t1.clone(),
            &TaskSubmitted {
                capability: "text.upper".into(),
                input: serde_json::json!({"text": "héllo", "n": [1, 2.5, null]}),
                ..Default::default()
            },
        ),
        Draft::new(
            t1,
            &TaskCompleted {
                output: serde_json::json!({"text": "HELLO"}),
                attempt: 1,
            },
        ),
        Draft::new(
            p1.clone(),
            &ProposalOpened {
                question: "deploy?".into(),
                payload: serde_json::json!({}),
                protocol: Protocol::Qualified {
                    numerator: 2,
                    denominator: 3,
                },
                voters: [(me.public_key().to_string(), 1)].into(),
                quorum: 1,
                deadline: chrono::DateTime::UNIX_EPOCH,
                category: "release".into(),
                stimulus: 0.5,
            },
        ),
        Draft::new(
            p1,
            &VoteCast {
                choice: murmur_subjects::events::Choice::Approve,
                reason: "ok".into(),
            },
        ),
        Draft::new(
            Token::new("doc-1").expect("token"),
            &KnowledgeChanged {
                space: "s".into(),
                change: "AAEC".into(),
            },
        ),
    ];
    drafts
        .into_iter()
        .map(|d| {
            let sealed = d.expect("a draft").seal(&me, &realm);
            let (_, body) = binding::encode(&sealed.record, ContentMode::Structured, usize::MAX)
                .expect("encodes");
            let (headers, data) =
                binding::encode(&sealed.record, ContentMode::Binary, usize::MAX).expect("encodes");
            let mut binary = Vec::new();
            for (name, value) in headers.iter() {
                binary.extend_from_slice(format!("{name}: {value}\n").as_bytes());
            }
            binary.extend_from_slice(b"\n");
            binary.extend_from_slice(&data);
            (sealed.subject.to_string(), body.to_vec(), binary)
        })
        .collect()
}

/// Headers and body of a binary-mode message written as `name: value` lines, a blank line
/// and the body (lines that are not a valid header are dropped, as a NATS client would
/// never deliver them).
fn binary_message(bytes: &[u8]) -> (async_nats::HeaderMap, Bytes) {
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(bytes.len());
    let mut headers = async_nats::HeaderMap::new();
    for line in String::from_utf8_lossy(&bytes[..split]).lines() {
        if let Some((name, value)) = line.split_once(": ")
            && let Ok(name) = name.parse::<async_nats::header::HeaderName>()
            && let Ok(value) = value.parse::<async_nats::header::HeaderValue>()
        {
            headers.insert(name, value);
        }
    }
    let body = bytes.get(split + 2..).unwrap_or_default();
    (headers, Bytes::copy_from_slice(body))
}

fn structured_headers() -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Content-Type", binding::STRUCTURED_CONTENT_TYPE);
    h
}

#[test]
fn cloudevents_in_both_content_modes() {
    let events = sealed_events();
    let mut seeds: Vec<Vec<u8>> = events.iter().map(|(_, s, _)| s.clone()).collect();
    seeds.extend(events.iter().map(|(_, _, b)| b.clone()));
    let structured = structured_headers();
    fuzz("cloudevents", seeds, |bytes| {
        let structured = binding::decode(
            Some(&structured),
            &Bytes::copy_from_slice(bytes),
            512 * 1024,
        );
        let (headers, body) = binary_message(bytes);
        let binary = binding::decode(Some(&headers), &body, 512 * 1024);
        let _ = binding::decode(None::<&Headers>, &Bytes::copy_from_slice(bytes), 512 * 1024);
        match (structured.is_ok(), binary.is_ok()) {
            (true, _) => "structured ok",
            (_, true) => "binary ok",
            _ => "refused",
        }
    });
}

#[test]
fn the_event_codec_decodes_verifies_and_validates() {
    let codec = EventCodec::new(Catalog::standard().clone());
    let events = sealed_events();
    let subjects: Vec<String> = events.iter().map(|(s, ..)| s.clone()).collect();
    // The seed carries its subject on a first line, so edits reach the subject too.
    let seeds = events
        .iter()
        .map(|(subject, body, _)| [subject.as_bytes(), b"\n", body].concat())
        .collect();
    let structured = structured_headers();
    fuzz("event_codec", seeds, |bytes| {
        let (subject, body) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (
                String::from_utf8_lossy(&bytes[..i]).to_string(),
                &bytes[i + 1..],
            ),
            None => (subjects[bytes.len() % subjects.len()].clone(), bytes),
        };
        let body = Bytes::copy_from_slice(body);
        let _ = codec.decode(&subject, None::<&Headers>, &body);
        match codec.decode(&subject, Some(&structured), &body) {
            // What decodes verified: it is one of the seeds, unchanged where it is signed.
            Ok(event) => {
                assert_eq!(event.emitter(), identity().public_key());
                "ok"
            }
            Err(e) => e.reason().as_str(),
        }
    });
}

#[test]
fn payloads_of_every_declared_type_parse_and_upcast() {
    let catalog = Catalog::standard();
    let types: Vec<_> = catalog.iter().collect();
    let events = sealed_events();
    // A payload seed is `TYPE-INDEX\n` + the data of a sealed event.
    let mut seeds: Vec<Vec<u8>> = events
        .iter()
        .filter_map(|(_, body, _)| {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            let ty = v["type"].as_str()?;
            let index = types.iter().position(|t| t.ty == ty)?;
            Some(format!("{index}\n{}", v["data"]).into_bytes())
        })
        .collect();
    seeds.push(b"0\n{\"v\":1}".to_vec());
    fuzz("payloads", seeds, |bytes| {
        let (index, data) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (
                String::from_utf8_lossy(&bytes[..i])
                    .parse::<usize>()
                    .unwrap_or(i),
                &bytes[i + 1..],
            ),
            None => (bytes.len(), bytes),
        };
        ok_or(&types[index % types.len()].validate(data))
    });
}

#[test]
fn subjects_filters_and_tokens_parse() {
    let seeds = [
        "murmur.v1.acme.evt.task.t-1.submitted",
        "murmur.v1.acme.live.agent.UABC.heartbeat",
        "murmur.v1.*.evt.>",
        "murmur.v1.acme.dlq.sys.*.dead_lettered",
        "agents.prompt.llm.acme.default",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("subjects", seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let parsed = Subject::parse(&text);
        if let Ok(subject) = &parsed {
            // What parses prints back the same.
            assert_eq!(subject.as_str(), text);
        }
        let _ = SubjectFilter::parse(&text);
        let _ = Token::new(text.to_string());
        let mut parts = text.splitn(3, '.');
        let _ = murmur_subjects::agent_protocol::AgentAddress::new(
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        ok_or(&parsed)
    });
}

fn example(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name),
    )
    .expect("an example file")
}

#[test]
fn deployment_graphs_in_toml_and_json() {
    use murmur_nix::{DeploymentSpec, Format};
    let seeds = vec![example("shop.toml"), example("shop.json")];
    fuzz("deployment_graphs", seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let format = if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Toml
        };
        match DeploymentSpec::parse(&text, format) {
            Ok(spec) => match murmur_nix::build(spec) {
                Ok(_) => "flake built",
                Err(_) => "parsed, refused",
            },
            Err(_) => "not parsed",
        }
    });
}

#[test]
fn task_graph_files() {
    use murmur_coordination::graph::{GraphSpec, TaskGraph};
    let toml_seed = example("task-graph.toml");
    let spec: GraphSpec =
        toml::from_str(&String::from_utf8_lossy(&toml_seed)).expect("the example parses");
    let seeds = vec![toml_seed, serde_json::to_vec(&spec).expect("serializes")];
    fuzz("task_graphs", seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let spec = if text.trim_start().starts_with('{') {
            serde_json::from_str::<GraphSpec>(&text).ok()
        } else {
            toml::from_str::<GraphSpec>(&text).ok()
        };
        match spec {
            Some(spec) => match TaskGraph::new(&spec) {
                Ok(_) => "graph built",
                Err(_) => "parsed, refused",
            },
            None => "not parsed",
        }
    });
}

#[test]
fn tool_paths_never_leave_the_root() {
    use murmur_agents::tool::{FsRequest, FsTool};
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("src/deep")).expect("dirs");
    std::fs::write(root.join("src/lib.rs"), "inside").expect("a file");
    std::fs::write(root.join("src/deep/x.txt"), "inside too").expect("a file");
    std::fs::write(dir.path().join("secret.txt"), "OUTSIDE-SECRET").expect("a file");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("src/link"))
        .expect("a symlink");
    let tool = FsTool::new(&root, false).expect("a tool");
    let seeds = [
        "src/lib.rs",
        "src/deep/x.txt",
        "../secret.txt",
        "src/link",
        "./src/../src/lib.rs",
        "/etc/passwd",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("tool_paths", seeds, |bytes| {
        let path = String::from_utf8_lossy(bytes).to_string();
        let mut answered = "refused";
        for request in [
            FsRequest::Read {
                path: path.clone(),
                max_bytes: None,
            },
            FsRequest::Stat { path: path.clone() },
            FsRequest::List { path },
        ] {
            if let Ok(output) = tool.run(&request) {
                assert!(
                    !output.to_string().contains("OUTSIDE-SECRET"),
                    "read out of the root: {request:?}"
                );
                answered = "answered";
            }
        }
        answered
    });
}

#[test]
fn knowledge_changes_received() {
    use automerge::{AutoCommit, ROOT, ReadDoc as _, transaction::Transactable as _};
    let mut doc = AutoCommit::new();
    let facts = doc
        .put_object(ROOT, "facts", automerge::ObjType::Map)
        .expect("a map");
    doc.put(&facts, "f1", "{\"value\":1}").expect("a fact");
    doc.commit();
    doc.put(&facts, "f2", "{\"value\":[1,2]}").expect("a fact");
    doc.commit();
    let seeds: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .chain([doc.save()])
        .collect();
    assert!(doc.length(&facts) == 2);
    let emitter = identity().public_key().to_string();
    fuzz("knowledge_changes", seeds, |bytes| {
        let loaded = AutoCommit::load(bytes).is_ok();
        match automerge::Change::try_from(bytes) {
            Ok(change) => {
                match murmur_knowledge::layout::check_change(&change, &emitter, 64 * 1024) {
                    Ok(()) => "change accepted",
                    Err(_) => "change refused",
                }
            }
            Err(_) if loaded => "document loaded",
            Err(_) => "not automerge",
        }
    });
}

#[test]
fn agent_protocol_prompts_and_mcp_arguments() {
    let seeds = [
        &b"What is the capital of France?"[..],
        br#"{"prompt":"hi","attachments":[{"filename":"a.txt","content":"aGk="}]}"#,
        br#"{"type":"response","data":"Par"}"#,
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    fuzz("prompts", seeds, |bytes| {
        let parsed = murmur_agents::agent_protocol::parse_prompt(bytes);
        if let Ok(prompt) = &parsed {
            let _ = murmur_agents::agent_protocol::task_input("llm.generate", prompt, 16);
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            let _ = murmur_agents::agent_protocol::prompt_text(&value);
            let _ = murmur_agents::agent_protocol::answer_text(&value);
            let _ = murmur_agents::mcp::arguments_of(&value);
        }
        ok_or(&parsed)
    });
}

/// Chat templates come inside a GGUF file: whoever made the model wrote them.
#[test]
fn chat_templates_from_model_files() {
    use murmur_agents::inference::chat::{ChatMessage, ChatTemplate};
    let seeds = [
        // ChatML, as SmolLM2 ships it.
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        // Llama 2, with raise_exception and string methods.
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
        "{% set x = [1,2,3] %}{% for i in range(3) %}{{ x|join(',') }}{{ messages|length }}{% endfor %}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let messages = [
        ChatMessage {
            role: "user".into(),
            content: "hello {{ 7*7 }}".into(),
        },
        ChatMessage {
            role: "assistant".into(),
            content: "hi".into(),
        },
    ];
    fuzz("chat_templates", seeds, |bytes| {
        let source = String::from_utf8_lossy(bytes);
        match ChatTemplate::new(&source, "<s>", "</s>") {
            Ok(template) => match template.render(&messages) {
                Ok(_) => "rendered",
                Err(_) => "render refused",
            },
            Err(_) => "not a template",
        }
    });
}

/// A model file is whatever someone put on disk: its header, metadata (vocabulary, chat
/// template, sizes) and tensor table are read before any weight.
#[test]
fn gguf_model_files() {
    use murmur_agents::inference::chat::ChatMessage;
    use murmur_agents::inference::{
        Architecture, GenerateOptions, GgufModel, TestModel, TestVocabulary, write_test_model,
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let seed_path = dir.path().join("seed.gguf");
    let mut seeds = Vec::new();
    for model in [
        TestModel::new(1),
        TestModel::new(2).vocabulary(TestVocabulary::SentencePiece),
        TestModel::new(3).q4_1_projections(),
        TestModel::new(4).architecture(Architecture::Qwen2),
        TestModel::new(5).architecture(Architecture::Phi3),
    ] {
        write_test_model(&seed_path, &model).expect("a test model");
        seeds.push(std::fs::read(&seed_path).expect("the test model"));
    }
    let input_path = dir.path().join("input.gguf");
    fuzz("gguf", seeds, |bytes| {
        std::fs::write(&input_path, bytes).expect("the input is written");
        match GgufModel::load(&input_path) {
            Ok(model) => {
                let _ = model.chat_prompt(&[ChatMessage::new("user", "hi")]);
                match model.generate("hi", &GenerateOptions::greedy(2)) {
                    Ok(_) => "loaded, generated",
                    Err(_) => "loaded, generation refused",
                }
            }
            Err(_) => "refused",
        }
    });
}

/// `Agent-Sender` headers arrive on prompts from anyone who may publish one.
#[test]
fn agent_sender_headers() {
    use murmur_subjects::agent_sender::{self, NonceWindow};
    let me = identity();
    let now = chrono::Utc::now();
    let subject = "agents.prompt.shouter.acme.default";
    let signed = agent_sender::sign(&me, "$G", Some("caller"), subject, b"hi", now, "n0nce");
    let claim = agent_sender::SenderHeader {
        sub: None,
        ts: None,
        nonce: None,
        sig: None,
        ..signed.clone()
    };
    let seeds = [signed, claim]
        .iter()
        .map(|h| agent_sender::serialize(h).into_bytes())
        .collect();
    let nonces = std::sync::Mutex::new(NonceWindow::default());
    fuzz("agent_sender", seeds, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return "not text";
        };
        match agent_sender::parse(text) {
            Ok(Some(header)) => {
                let Ok(mut nonces) = nonces.lock() else {
                    return "poisoned";
                };
                match agent_sender::verify(&header, subject, b"hi", now, &mut nonces) {
                    Ok(sender) if sender.verified => {
                        assert_eq!(sender.user, me.public_key(), "verified as someone else");
                        "verified"
                    }
                    Ok(_) => "claim",
                    Err(_) => "rejected",
                }
            }
            Ok(None) => "unknown version",
            Err(_) => "malformed",
        }
    });
}
