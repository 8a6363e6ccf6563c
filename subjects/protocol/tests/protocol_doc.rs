//! `docs/protocol.md` shows example bytes, the catalog and the roles' permissions; this test
//! computes each from the code and checks the document holds exactly that. With
//! `MURMUR_UPDATE_DOCS=1` it rewrites the generated blocks instead.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use murmur_protocol::binding::{self, ContentMode};
use murmur_protocol::events::{TaskCompleted, TaskStarted};
use murmur_protocol::roles::{self, ResourceNames, Role};
use murmur_protocol::{Catalog, EventRecord, Identity, Payload, Token, payload};
use sha2::{Digest, Sha256};

/// The example participant: a user nkey from 32 bytes of 0x2a (an example, not a secret).
fn example_identity() -> Identity {
    let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [0x2a; 32])
        .expect("a user key from raw bytes");
    Identity::from_seed(&pair.seed().expect("seed")).expect("the seed loads")
}

fn record(identity: &Identity, task: &str, ty: &str, id: &str, data: Vec<u8>) -> EventRecord {
    EventRecord {
        id: id.into(),
        source: identity.public_key().into(),
        ty: ty.into(),
        subject: Some(task.into()),
        time: Some(
            Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0)
                .single()
                .expect("a valid time"),
        ),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        correlation_id: Some("01938a3c-0000-7000-8000-0000000000a0".into()),
        causation_id: Some("01938a3c-0000-7000-8000-0000000000b0".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        signature: None,
        extensions: vec![],
        data: Some(Bytes::from(data)),
    }
}

fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "{:04x}  {:<47}  {text}", i * 16, hex.join(" "))
            .expect("writing to a String");
    }
    out
}

fn subject(task: &str, verb: &str) -> String {
    format!("murmur.v1.acme.evt.task.{task}.{verb}")
}

/// One event signed on its own, in both content modes.
fn single_example() -> String {
    let me = example_identity();
    let data = payload::encode(&TaskCompleted {
        output: serde_json::json!({"text": "HELLO"}),
        attempt: 1,
    })
    .expect("the payload encodes");
    let nats_subject = subject("t-1", "completed");
    let mut ev = record(
        &me,
        "t-1",
        TaskCompleted::TYPE,
        "01938a3c-0000-7000-8000-000000000001",
        data.clone(),
    );
    let signed = ev.signing_bytes(&nats_subject);
    me.sign(&mut ev, &nats_subject);
    let (_, body) =
        binding::encode(&ev, ContentMode::Structured, usize::MAX).expect("the event encodes");
    let (headers, binary_body) =
        binding::encode(&ev, ContentMode::Binary, usize::MAX).expect("the event encodes");
    let mut out = String::new();
    writeln!(out, "seed (example)  {}", me.seed()).expect("writing to a String");
    writeln!(out, "source          {}", me.public_key()).expect("writing to a String");
    writeln!(out, "NATS subject    {nats_subject}").expect("writing to a String");
    writeln!(
        out,
        "data            {}",
        String::from_utf8(data).expect("JSON is UTF-8")
    )
    .expect("writing to a String");
    writeln!(out, "\nsigning bytes ({} bytes):", signed.len()).expect("writing to a String");
    out.push_str(&hex_dump(&signed));
    writeln!(
        out,
        "\nmurmursig       {}",
        ev.signature.as_deref().expect("a sealed event is signed")
    )
    .expect("writing to a String");
    writeln!(
        out,
        "\nstructured mode: header Content-Type: application/cloudevents+json, body:"
    )
    .expect("writing to a String");
    writeln!(
        out,
        "{}",
        String::from_utf8(body.to_vec()).expect("JSON is UTF-8")
    )
    .expect("writing to a String");
    writeln!(out, "\nbinary mode: headers (in any order)").expect("writing to a String");
    let mut lines: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("  {name}: {value}"))
        .collect();
    lines.sort();
    for line in lines {
        writeln!(out, "{line}").expect("writing to a String");
    }
    writeln!(
        out,
        "body: {}",
        String::from_utf8(binary_body.to_vec()).expect("JSON is UTF-8")
    )
    .expect("writing to a String");
    out
}

/// Three events under one Merkle batch signature.
fn batch_example() -> String {
    let me = example_identity();
    let tasks = ["t-1", "t-2", "t-3"];
    let subjects: Vec<String> = tasks.iter().map(|t| subject(t, "started")).collect();
    let mut records: Vec<EventRecord> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            record(
                &me,
                t,
                TaskStarted::TYPE,
                &format!("01938a3c-0000-7000-8000-00000000001{i}"),
                payload::encode(&TaskStarted { attempt: 1 }).expect("the payload encodes"),
            )
        })
        .collect();
    let leaves: Vec<[u8; 32]> = records
        .iter()
        .zip(&subjects)
        .map(|(r, s)| {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(r.signing_bytes(s));
            h.finalize().into()
        })
        .collect();
    let subject_refs: Vec<&str> = subjects.iter().map(String::as_str).collect();
    me.sign_batch(&mut records, &subject_refs);
    let node = |l: &[u8; 32], r: &[u8; 32]| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    };
    let pad: [u8; 32] = Sha256::digest([2u8]).into();
    let root = node(&node(&leaves[0], &leaves[1]), &node(&leaves[2], &pad));
    let hex = |h: &[u8]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut out = String::new();
    for (i, leaf) in leaves.iter().enumerate() {
        writeln!(out, "leaf {i}  {}  ({})", hex(leaf), subjects[i]).expect("writing to a String");
    }
    writeln!(out, "pad     {}", hex(&pad)).expect("writing to a String");
    writeln!(out, "root    {}", hex(&root)).expect("writing to a String");
    writeln!(out, "signed  \"murmur-merkle-v1\" ‖ root (48 bytes)").expect("writing to a String");
    for (i, r) in records.iter().enumerate() {
        writeln!(
            out,
            "\nmurmursig of event {i}:\n{}",
            r.signature.as_deref().expect("a sealed event is signed")
        )
        .expect("writing to a String");
    }
    out
}

/// Every declared event type.
fn catalog_table() -> String {
    let mut out = String::from(
        "| type | subject | v | emitted by | role checked by folds | description |\n|---|---|---|---|---|---|\n",
    );
    for t in Catalog::standard().iter() {
        let subject = t.pattern();
        let subject = if t.own_aggregate {
            subject.replace("{id}", "{own key}")
        } else {
            subject
        };
        let roles: Vec<&str> = t.emitted_by.iter().map(|r| r.as_str()).collect();
        writeln!(
            out,
            "| `{}` | `{}` | {} | {} | {} | {} |",
            t.ty,
            subject,
            t.version,
            roles.join(", "),
            if t.role_checked { "yes" } else { "" },
            t.description
        )
        .expect("writing to a String");
    }
    out
}

/// What the server lets a worker and a voter do in realm `acme`.
fn permissions_example() -> String {
    let realm = Token::new("acme").expect("a valid token");
    let mut out = String::new();
    for role in [Role::Worker, Role::Voter] {
        let p = roles::permissions(role, &realm, &ResourceNames::default());
        writeln!(out, "{} publish:", role.as_str()).expect("writing to a String");
        for s in p.publish.iter().filter(|s| !s.starts_with("$JS.")) {
            writeln!(out, "  {s}").expect("writing to a String");
        }
        // The JetStream API subjects, summed up: the same read API on each stream.
        let streams: Vec<&str> = p
            .publish
            .iter()
            .filter_map(|s| s.strip_prefix("$JS.API.STREAM.INFO."))
            .collect();
        writeln!(
            out,
            "  $JS.API.INFO, and on each of {}:\n    $JS.API.STREAM.INFO|STREAM.MSG.GET|DIRECT.GET[.>] \
             $JS.API.CONSUMER.CREATE[.>]|CONSUMER.INFO.*|CONSUMER.MSG.NEXT.* $JS.FC.>",
            streams.join(", ")
        )
        .expect("writing to a String");
        for s in p.publish.iter().filter(|s| s.starts_with("$JS.")) {
            let known = s == "$JS.API.INFO"
                || streams.iter().any(|stream| {
                    s.contains(&format!(".{stream}"))
                        && !s.contains("DELETE")
                        && !s.contains("PURGE")
                });
            assert!(
                known,
                "a JetStream permission the summary does not show: {s}"
            );
        }
        writeln!(out, "{} subscribe:", role.as_str()).expect("writing to a String");
        for s in &p.subscribe {
            writeln!(out, "  {s}").expect("writing to a String");
        }
        let answers = if p.responses {
            format!(
                "yes, one reply each within {} s",
                roles::RESPONSE_WINDOW_SECS
            )
        } else {
            "no".to_string()
        };
        writeln!(out, "{} answers requests: {answers}\n", role.as_str())
            .expect("writing to a String");
    }
    out.trim_end().to_string() + "\n"
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md")
}

/// Replaces the block between `<!-- generated: NAME -->` and `<!-- end: NAME -->`.
fn with_block(doc: &str, name: &str, fenced: &str) -> Option<String> {
    let open = format!("<!-- generated: {name} -->\n");
    let close = format!("<!-- end: {name} -->");
    let start = doc.find(&open)? + open.len();
    let end = start + doc[start..].find(&close)?;
    Some(format!("{}{fenced}{}", &doc[..start], &doc[end..]))
}

#[test]
fn the_protocol_document_shows_what_the_code_does() {
    let blocks = [
        ("single", format!("```text\n{}```\n", single_example())),
        ("batch", format!("```text\n{}```\n", batch_example())),
        ("catalog", catalog_table()),
        (
            "permissions",
            format!("```text\n{}```\n", permissions_example()),
        ),
    ];
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).expect("docs/protocol.md");
    let mut updated = doc.clone();
    for (name, block) in &blocks {
        updated = with_block(&updated, name, block).unwrap_or_else(|| {
            panic!("docs/protocol.md has no `<!-- generated: {name} -->` block")
        });
    }
    if updated != doc {
        if std::env::var_os("MURMUR_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &updated).expect("write docs/protocol.md");
        } else {
            let first = doc
                .lines()
                .zip(updated.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "docs/protocol.md differs from the code from line {}: {:?} (code says {:?}); \
                 rerun with MURMUR_UPDATE_DOCS=1 to rewrite the generated blocks",
                first + 1,
                doc.lines().nth(first),
                updated.lines().nth(first)
            );
        }
    }
}

#[test]
fn the_example_signatures_verify() {
    let me = example_identity();
    let verifier = murmur_protocol::identity::SignatureVerifier::new();
    let nats_subject = subject("t-1", "completed");
    let mut ev = record(&me, "t-1", TaskCompleted::TYPE, "x", b"{\"v\":1}".to_vec());
    me.sign(&mut ev, &nats_subject);
    verifier.verify(&ev, &nats_subject).expect("verifies");
    ev.data = Some(Bytes::from_static(b"{\"v\":2}"));
    assert!(verifier.verify(&ev, &nats_subject).is_err());
}
