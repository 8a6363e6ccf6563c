//! Unit tests of `agent_protocol`.

use super::*;

#[test]
fn prompts_are_text_or_json() {
    assert_eq!(parse_prompt(b"hello").expect("parses").prompt, "hello");
    let p =
        parse_prompt(br#"{"prompt":"hi","attachments":[{"filename":"a.txt","content":"aGk="}]}"#)
            .expect("parses");
    assert_eq!((p.prompt.as_str(), p.attachments.len()), ("hi", 1));
    assert_eq!(parse_prompt(b"  "), Err(PromptError::Empty));
    assert!(matches!(
        parse_prompt(b"{\"text\":1}"),
        Err(PromptError::Malformed(_))
    ));
    assert!(matches!(
        parse_prompt(&[0xff, 0xfe]),
        Err(PromptError::Malformed(_))
    ));
    assert_eq!(
        parse_prompt(br#"{"prompt":"hi","attachments":[{"filename":"a","content":"%%"}]}"#),
        Err(PromptError::BadAttachment("a".into()))
    );
}

#[test]
fn a_prompt_becomes_a_chat_for_a_model_and_text_otherwise() {
    let p = parse_prompt(b"capital of France?").expect("parses");
    assert_eq!(
        task_input("llm.generate", &p, 32),
        serde_json::json!({"messages": [{"role": "user", "content": "capital of France?"}], "max_tokens": 32})
    );
    assert_eq!(
        task_input("text.upper", &p, 32),
        serde_json::json!({"text": "capital of France?"})
    );
}

#[test]
fn answers_and_what_is_new() {
    assert_eq!(
        answer_text(&serde_json::json!({"text": "Paris", "tokens": [1]})),
        "Paris"
    );
    assert_eq!(answer_text(&serde_json::json!("Paris")), "Paris");
    assert_eq!(answer_text(&serde_json::json!({"n": 1})), r#"{"n":1}"#);
    assert_eq!(unsent("The cap", "The capital"), Some("ital"));
    assert_eq!(unsent("The capital", "The capital"), None);
    assert_eq!(unsent("abc", "running"), None);
}

#[test]
fn discovery_reads_protocol_agents_only() {
    let info = serde_json::json!({
        "name": "agents", "id": "I1", "description": "d", "version": "0.5.0",
        "metadata": {"agent": "echo", "owner": "acme", "session": "default", "protocol_version": "0.3"},
        "endpoints": [{"name": "status", "subject": "agents.status.echo.acme.default"},
                      {"name": "prompt", "subject": "agents.prompt.echo.acme.default"}],
    });
    let found = discovered(&info).expect("a protocol agent");
    assert_eq!(found.prompt_subject, "agents.prompt.echo.acme.default");
    assert_eq!(
        (found.agent.as_str(), found.instance_id.as_str()),
        ("echo", "I1")
    );
    let mut other = info.clone();
    other["name"] = "murmur-worker".into();
    assert_eq!(discovered(&other), None);
    let mut no_prompt = info;
    no_prompt["endpoints"] = serde_json::json!([]);
    assert_eq!(discovered(&no_prompt), None);
}

#[test]
fn a_task_input_becomes_a_prompt() {
    assert_eq!(prompt_text(&serde_json::json!({"text": "a"})), "a");
    assert_eq!(prompt_text(&serde_json::json!({"prompt": "b"})), "b");
    assert_eq!(
        prompt_text(&serde_json::json!({"messages": [{"role": "user", "content": "c"}]})),
        "c"
    );
    assert_eq!(prompt_text(&serde_json::json!({"n": 1})), r#"{"n":1}"#);
}

#[test]
fn answer_streams_are_read_chunk_by_chunk() {
    let message =
        |payload: &'static [u8], headers: Option<async_nats::HeaderMap>| async_nats::Message {
            subject: "_INBOX.agents.x".into(),
            reply: None,
            payload: Bytes::from_static(payload),
            headers,
            status: None,
            description: None,
            length: payload.len(),
        };
    assert_eq!(
        read_chunk(&message(br#"{"type":"response","data":"Par"}"#, None)),
        Chunk::Response("Par".into())
    );
    assert_eq!(
        read_chunk(&message(br#"{"type":"status","data":"ack"}"#, None)),
        Chunk::Status("ack".into())
    );
    assert_eq!(
        read_chunk(&message(br#"{"type":"new-kind"}"#, None)),
        Chunk::Unknown
    );
    assert_eq!(read_chunk(&message(b"", None)), Chunk::End);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Service-Error-Code", "500");
    headers.insert("Nats-Service-Error", "boom");
    assert_eq!(
        read_chunk(&message(b"", Some(headers))),
        Chunk::Error("500".into(), "boom".into())
    );
}

#[test]
fn a_prompt_to_the_assistant_is_a_question_whose_step_lines_are_not_the_answer() {
    let prompt = parse_prompt(b"capital of France?").expect("a prompt");
    let input = task_input(crate::assistant::ASK_CAPABILITY, &prompt, 32);
    let request: crate::assistant::AskRequest =
        serde_json::from_value(input).expect("an AskRequest");
    assert_eq!(
        request,
        crate::assistant::AskRequest::new("capital of France?")
    );
    assert!(!progress_is_output(crate::assistant::ASK_CAPABILITY));
    assert!(progress_is_output("llm.generate"));
}

#[test]
fn progress_streams_once_continued_and_status_messages_never() {
    // A status message, then the output: nothing of the status is streamed.
    assert_eq!(confirmed("", None, "running in python"), None);
    assert_eq!(confirmed("", Some("running in python"), "HELLO"), None);
    // Partial output: each text streams once the next one continues it.
    assert_eq!(confirmed("", Some("The"), "The cap"), Some("The"));
    assert_eq!(
        confirmed("The", Some("The cap"), "The capital"),
        Some(" cap")
    );
    assert_eq!(confirmed("The cap", Some("The cap"), "The cap"), None);
}

#[test]
fn chunks_are_the_protocols() {
    assert_eq!(&ack_chunk()[..], br#"{"type":"status","data":"ack"}"#);
    assert_eq!(
        &response_chunk("a\"b")[..],
        br#"{"type":"response","data":"a\"b"}"#
    );
    let address = AgentAddress::new("llm", "acme", "default").expect("parses");
    let hb = heartbeat_payload(
        &address,
        "ID",
        Duration::from_secs(30),
        &HashMap::new(),
        chrono::DateTime::UNIX_EPOCH,
    );
    assert_eq!(hb["instance_id"], "ID");
    assert_eq!(hb["interval_s"], 30);
    assert_eq!(hb["ts"], "1970-01-01T00:00:00.000Z");
    assert_eq!(
        hb["endpoints"]["prompt"]["subject"],
        "agents.prompt.llm.acme.default"
    );
}
