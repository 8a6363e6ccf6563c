//! Unit tests of `vote`.

use super::*;
use murmur_agents::voter::PolicyVoter;

#[test]
fn an_electorate_by_capability_and_labels_takes_only_online_agents_matching_all() {
    use murmur_coordination::registry::AgentEntry;
    let agent = |status: &str, capabilities: &[&str], labels: serde_json::Value| {
        serde_json::from_value::<AgentEntry>(serde_json::json!({
            "name": "a", "kind": "voter", "capabilities": capabilities,
            "labels": labels, "agent_version": "0",
            "hardware": {"cores": 1, "memory_mib": 1},
            "handles": null, "status": status, "last_sequence": 1, "joins": 1,
        }))
        .expect("entry")
    };
    let agents: BTreeMap<String, AgentEntry> = [
        (
            "UA",
            agent(
                "online",
                &["vote"],
                serde_json::json!({"team": "db", "tier": "1"}),
            ),
        ),
        (
            "UB",
            agent("online", &["vote"], serde_json::json!({"team": "web"})),
        ),
        (
            "UC",
            agent("offline", &["vote"], serde_json::json!({"team": "db"})),
        ),
        (
            "UD",
            agent("online", &["build"], serde_json::json!({"team": "db"})),
        ),
    ]
    .map(|(k, a)| (k.to_string(), a))
    .into();
    let pick = |capability: Option<&str>, labels: &[(&str, &str)]| -> Vec<String> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        electorate_by(&agents, capability, &labels)
            .cloned()
            .collect()
    };
    assert_eq!(pick(Some("vote"), &[]), ["UA", "UB"]);
    assert_eq!(pick(None, &[("team", "db")]), ["UA", "UD"]);
    assert_eq!(pick(Some("vote"), &[("team", "db")]), ["UA"]);
    assert_eq!(
        pick(Some("vote"), &[("team", "db"), ("tier", "2")]),
        Vec::<String>::new()
    );
}

#[test]
fn protocols_parse() {
    assert_eq!(
        parse_protocol("simple").expect("ok"),
        Protocol::SimpleMajority
    );
    assert_eq!(
        parse_protocol("qualified:2/3").expect("ok"),
        Protocol::Qualified {
            numerator: 2,
            denominator: 3
        }
    );
    assert!(matches!(
        parse_protocol("adaptive:simple:2").expect("ok"),
        Protocol::AdaptiveThreshold {
            min_responders: 2,
            ..
        }
    ));
    assert!(parse_protocol("qualified:3/2").is_err());
    assert!(parse_protocol("dictator").is_err());
}

#[test]
fn the_example_policy_parses_and_votes_by_its_rules() {
    use murmur_agents::voter::Voter as _;
    let policy: PolicyVoter =
        toml::from_str(include_str!("../../../../examples/voter-policy.toml")).expect("parses");
    let opened = |payload: serde_json::Value| ProposalOpened {
        question: "release?".into(),
        payload,
        protocol: Protocol::SimpleMajority,
        voters: BTreeMap::new(),
        quorum: 1,
        deadline: chrono::DateTime::from_timestamp(1_000, 0).expect("time"),
        category: "general".into(),
        stimulus: 1.0,
    };
    let choice = |payload| policy.vote(&opened(payload)).map(|v| v.choice);
    assert_eq!(
        choice(serde_json::json!({"tests_passed": true, "risk": 0.9})),
        Some(Choice::Reject)
    );
    assert_eq!(
        choice(serde_json::json!({"tests_passed": true, "risk": 0.2})),
        Some(Choice::Approve)
    );
    assert_eq!(choice(serde_json::json!({})), Some(Choice::Abstain));
}

#[test]
fn protocol_text_reads_back_as_the_same_protocol() {
    for text in [
        "simple",
        "weighted",
        "unanimous",
        "qualified:2/3",
        "adaptive:simple:2",
        "adaptive:qualified:3/4:5",
    ] {
        let protocol = parse_protocol(text).expect("parses");
        assert_eq!(protocol_text(&protocol), text);
    }
}

#[test]
fn a_decided_proposal_shows_its_tally_votes_and_refusals() {
    use murmur_coordination::consensus::{Proposal, VoteRefusal};
    use murmur_subjects::events::ProposalDecided;
    let p = Proposal {
        opened: ProposalOpened {
            question: "ship it?".into(),
            payload: serde_json::json!({"risk": 0.2}),
            protocol: Protocol::Qualified {
                numerator: 2,
                denominator: 3,
            },
            voters: [("UA", 1), ("UB", 2), ("UC", 1)]
                .map(|(k, w)| (k.to_string(), w))
                .into(),
            quorum: 2,
            deadline: chrono::DateTime::from_timestamp(1_000, 0).expect("time"),
            category: "release".into(),
            stimulus: 0.5,
        },
        electorate: ["UA", "UB", "UC"].map(String::from).into(),
        votes: [("UA", Choice::Approve), ("UB", Choice::Approve)]
            .map(|(k, c)| (k.to_string(), c))
            .into(),
        reasons: [("UB".to_string(), "the tests pass".to_string())].into(),
        refused: vec![("UX".into(), VoteRefusal::NotAVoter)],
        decided: Some(ProposalDecided {
            outcome: "approved".into(),
            approve: 3,
            reject: 0,
            abstain: 0,
            votes: 2,
            participants: Some(["UA", "UB"].map(String::from).into()),
        }),
        deadline_passed: false,
        deadline_checks: 0,
        proposer: "UP".into(),
        withdrawn: None,
        opened_event: Default::default(),
        last_cause: None,
    };
    let lines = describe_proposal("prop-1", &p);
    assert_eq!(
        lines[0],
        "prop-1  approved (approve 3 · reject 0 · abstain 0 · 2 votes counted)"
    );
    assert!(
        lines[2]
            .starts_with("rule      qualified:2/3 · quorum 2 · deadline 1970-01-01 00:16:40 UTC"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"  UA  1  approve *".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"  UB  2  approve * — the tests pass".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"  UC  1  -".to_string()), "{lines:?}");
    let refused = lines
        .iter()
        .position(|l| l.starts_with("refused votes"))
        .expect("refusals listed");
    assert!(lines[refused + 1].starts_with("  UX  "), "{lines:?}");

    // The adaptive protocol: who responds, and the silent voters marked as such.
    let mut adaptive = p;
    adaptive.opened.protocol = Protocol::AdaptiveThreshold {
        rule: Box::new(Protocol::SimpleMajority),
        min_responders: 2,
    };
    adaptive.electorate = ["UA", "UB"].map(String::from).into();
    let lines = describe_proposal("prop-2", &adaptive);
    assert!(
        lines.contains(
            &"responds  2 of 3 voters (their threshold for \"release\" was at most the stimulus 0.5); at least 2 needed"
                .to_string()
        ),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"  UC  1  - (does not respond: threshold above the stimulus)".to_string()),
        "{lines:?}"
    );
}
