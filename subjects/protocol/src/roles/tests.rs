use super::*;
use crate::subject::Token;

fn acme() -> Token {
    Token::new("acme").expect("token")
}

fn can_publish(p: &Permissions, subject: &str) -> bool {
    p.publish.iter().any(|pattern| matches(pattern, subject))
}

fn can_subscribe(p: &Permissions, subject: &str) -> bool {
    p.subscribe.iter().any(|pattern| matches(pattern, subject))
}

/// NATS wildcard matching of a concrete subject against a pattern.
fn matches(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for token in pattern.split('.') {
        match (token, s.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(x)) if t == x => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

#[test]
fn role_names_round_trip_and_unknown_ones_are_refused() {
    for r in Role::ALL {
        assert_eq!(r.as_str().parse::<Role>(), Ok(r));
    }
    let e = "admin".parse::<Role>().expect_err("not a role");
    assert!(e.to_string().contains("operator, coordinator"), "{e}");
}

#[test]
fn the_deciding_roles_are_those_whose_decisions_folds_check() {
    let deciding: Vec<Role> = Role::ALL.into_iter().filter(|r| r.decides()).collect();
    assert_eq!(
        deciding,
        vec![Role::Coordinator, Role::Tallier, Role::Monitor]
    );
}

#[test]
fn role_sets_hold_what_was_put_in() {
    let s = RoleSet::of(&[Role::Coordinator, Role::Tallier]);
    assert!(s.contains(Role::Coordinator) && s.contains(Role::Tallier));
    assert!(!s.contains(Role::Worker));
    assert!(s.any_of(&[Role::Worker, Role::Tallier]));
    assert_eq!(s.to_string(), "coordinator,tallier");
    assert_eq!(RoleSet::EMPTY.to_string(), "no role");
}

#[test]
fn a_worker_reports_results_but_cannot_decide_or_configure() {
    let p = permissions(Role::Worker, &acme(), &ResourceNames::default());
    assert!(can_publish(&p, "murmur.v1.acme.evt.task.t1.completed"));
    assert!(can_publish(&p, "murmur.v1.acme.evt.task.t1.started"));
    assert!(can_publish(&p, "murmur.v1.acme.live.task.t1.progress"));
    assert!(!can_publish(&p, "murmur.v1.acme.evt.task.t1.assigned"));
    assert!(!can_publish(&p, "murmur.v1.acme.evt.task.t1.lease_expired"));
    assert!(!can_publish(&p, "murmur.v1.acme.evt.proposal.p.decided"));
    assert!(!can_publish(&p, "murmur.v1.acme.evt.role.k.granted"));
    assert!(!can_publish(&p, "$JS.API.STREAM.DELETE.MURMUR_HISTORY"));
    assert!(!can_publish(&p, "$JS.API.STREAM.PURGE.MURMUR_HISTORY"));
    assert!(!can_publish(&p, "$JS.API.STREAM.UPDATE.MURMUR_HISTORY"));
    assert!(!can_publish(
        &p,
        "$JS.API.CONSUMER.DELETE.MURMUR_HISTORY.murmur-auditor"
    ));
    assert!(can_publish(
        &p,
        "$JS.API.CONSUMER.CREATE.MURMUR_HISTORY.x.murmur.v1.acme.evt.>"
    ));
    assert!(can_publish(&p, "$JS.API.DIRECT.GET.MURMUR_HISTORY"));
    // Its own agent events only: the aggregate is its key.
    assert!(can_publish(
        &p,
        &format!("murmur.v1.acme.evt.agent.{SELF_KEY}.joined")
    ));
    assert!(!can_publish(&p, "murmur.v1.acme.evt.agent.UOTHER.joined"));
    // Its own inbox only.
    assert!(can_subscribe(&p, &format!("_INBOX.{SELF_KEY}.x.y")));
    assert!(!can_subscribe(&p, "_INBOX.UOTHER.x"));
    assert!(!can_subscribe(&p, "_INBOX.>"));
    assert!(p.responses);
}

#[test]
fn the_kamil_rule_holds_for_inference_and_tool_roles() {
    let names = ResourceNames::default();
    for role in [Role::Inference, Role::Tool] {
        let p = permissions(role, &acme(), &names);
        // Neither submits a task: an LLM executes no tool, a tool reaches no LLM.
        assert!(
            !can_publish(&p, "murmur.v1.acme.evt.task.t1.submitted"),
            "{role}"
        );
        // Neither core-subscribes to task traffic or another agent's endpoint.
        assert!(
            !can_subscribe(&p, "murmur.v1.acme.live.task.t1.progress"),
            "{role}"
        );
        assert!(
            !can_subscribe(&p, "murmur.v1.acme.rpc.agent.UOTHER.status"),
            "{role}"
        );
        assert!(
            !can_subscribe(&p, "murmur.v1.acme.evt.task.t1.assigned"),
            "{role}"
        );
    }
    let inference = permissions(Role::Inference, &acme(), &names);
    // Memory is read-only for a language model: it queries, never writes.
    assert!(can_publish(&inference, "murmur.v1.acme.rpc.space.s.query"));
    assert!(!can_publish(
        &inference,
        "murmur.v1.acme.evt.knowledge.d.changed"
    ));
    assert!(!can_publish(
        &inference,
        "murmur.v1.acme.evt.space.s.opened"
    ));
    assert!(!can_publish(&inference, "$O.MURMUR_KNOWLEDGE.M.x"));
    // The orchestrator's side (submitter) writes knowledge.
    let submitter = permissions(Role::Submitter, &acme(), &names);
    assert!(can_publish(
        &submitter,
        "murmur.v1.acme.evt.knowledge.d.changed"
    ));
    assert!(can_publish(
        &submitter,
        "murmur.v1.acme.evt.task.t1.submitted"
    ));
}

#[test]
fn an_observer_reads_everything_and_writes_nothing() {
    let p = permissions(Role::Observer, &acme(), &ResourceNames::default());
    for s in &p.publish {
        assert!(
            s.starts_with("$JS.API.")
                || s.starts_with("$JS.FC.")
                || s == "$SRV.>"
                || s.contains(".rpc."),
            "observer publishes {s}"
        );
        assert!(
            !s.contains("STREAM.CREATE") && !s.contains("PURGE") && !s.contains("DELETE"),
            "{s}"
        );
    }
    assert!(!p.responses);
    assert!(can_publish(&p, "$JS.API.CONSUMER.CREATE.MURMUR_DLQ"));
    assert!(can_subscribe(&p, "murmur.v1.acme.live.agent.U1.heartbeat"));
}

#[test]
fn decisions_are_emitted_only_by_their_roles() {
    let names = ResourceNames::default();
    let who = |subject: &str| -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| can_publish(&permissions(*r, &acme(), &names), subject))
            .collect()
    };
    assert_eq!(
        who("murmur.v1.acme.evt.task.t.assigned"),
        vec![Role::Operator, Role::Coordinator]
    );
    assert_eq!(
        who("murmur.v1.acme.evt.proposal.p.decided"),
        vec![Role::Operator, Role::Tallier]
    );
    assert_eq!(
        who("murmur.v1.acme.evt.agent.a.offline"),
        vec![Role::Operator, Role::Monitor]
    );
    assert_eq!(
        who("murmur.v1.acme.evt.role.k.granted"),
        vec![Role::Operator]
    );
}

#[test]
fn endpoints_declare_valid_verbs() {
    for e in ENDPOINTS {
        Token::new(e.verb).expect("verb is a token");
    }
    assert_eq!(
        AGENT_STATUS
            .subject(&acme(), &Token::new("U1").expect("token"))
            .as_str(),
        "murmur.v1.acme.rpc.agent.U1.status"
    );
}

#[test]
fn the_matrix_lists_every_role_and_subject() {
    let m = RoleMatrix::derive("{realm}", &ResourceNames::default());
    let text = m.text();
    for r in Role::ALL {
        assert!(text.contains(r.as_str()), "{r}");
    }
    let row = |subject: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(subject))
            .unwrap_or_else(|| panic!("no row for {subject}:\n{text}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    // operator, coordinator, then nobody else.
    let assigned = row("murmur.v1.{realm}.evt.task.*.assigned");
    assert_eq!(assigned[..2], ["PS", "P"]);
    assert!(assigned[2..].iter().all(|c| *c == "."), "{assigned:?}");
    let inbox = row("_INBOX.{self}.>");
    assert!(inbox[1..].iter().all(|c| *c == "S"), "{inbox:?}");
    assert!(m.responders.contains(&Role::Memory));
}
