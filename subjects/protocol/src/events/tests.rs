use std::collections::BTreeMap;

use super::*;
use crate::payload::{Payload, PayloadError};

#[test]
fn load_changes_are_significant_only_past_thresholds() {
    let idle = AgentLoadChanged::default();
    let busy = AgentLoadChanged {
        queue_depth: 1,
        ..Default::default()
    };
    assert!(idle.significant_change(&busy), "empty → busy");
    assert!(!busy.significant_change(&AgentLoadChanged {
        queue_depth: 5,
        ..busy.clone()
    }));
    assert!(busy.significant_change(&AgentLoadChanged {
        queue_depth: 9,
        ..busy.clone()
    }));
    assert!(!idle.significant_change(&AgentLoadChanged {
        load: 0.2,
        ..idle.clone()
    }));
    assert!(idle.significant_change(&AgentLoadChanged {
        load: 0.3,
        ..idle.clone()
    }));
    assert!(idle.significant_change(&AgentLoadChanged {
        lame_duck: true,
        ..idle.clone()
    }));
}
use crate::payload::{decode, encode, json_schema, schema_version};

#[test]
fn current_version_round_trips() {
    let joined = AgentJoined {
        name: "c1".into(),
        kind: "compiler".into(),
        capabilities: vec!["compiler.rust".into()],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        agent_version: "0.1.0".into(),
        hardware: Hardware {
            cores: 2,
            memory_mib: 1024,
            accelerators: vec![],
            vram_mib: 0,
            cpu_features: vec![],
        },
        slots: 4,
        handles: Some(vec![TaskAssigned::TYPE.into(), TaskCancelled::TYPE.into()]),
    };
    let bytes = encode(&joined).expect("encode");
    assert!(bytes.starts_with(b"{\"v\":2,\"name\""));
    assert_eq!(schema_version(AgentJoined::TYPE, &bytes).expect("v"), 2);
    assert_eq!(decode::<AgentJoined>(&bytes).expect("decode"), joined);
}

#[test]
fn v1_agent_joined_upgrades_to_v2() {
    let v1 = br#"{"v":1,"name":"old","kind":"executor","capabilities":["executor.test"]}"#;
    let joined = decode::<AgentJoined>(v1).expect("v1 decodes");
    assert_eq!(joined.name, "old");
    assert_eq!(joined.agent_version, "unknown");
    assert_eq!(joined.hardware, Hardware::default());
    assert_eq!(joined.slots, 1);
    // Version not first, as another language might write it.
    let v1b = br#"{"name":"old","capabilities":[],"kind":"x","v":1}"#;
    assert_eq!(decode::<AgentJoined>(v1b).expect("decodes").kind, "x");
}

#[test]
fn a_v2_agent_joined_written_before_slots_and_handles_runs_one_task_at_once() {
    let v2 = br#"{"v":2,"name":"w","kind":"tool","capabilities":["tool.fs"],"agent_version":"0.1.0","hardware":{"cores":8,"memory_mib":1024}}"#;
    let joined = decode::<AgentJoined>(v2).expect("decodes");
    assert_eq!(joined.slots, 1);
    assert_eq!(joined.handles, None);
    assert!(
        joined.takes_tasks(),
        "undeclared types: as before, it takes tasks"
    );
    let declared = |types: &[&str]| AgentJoined {
        handles: Some(types.iter().map(|t| t.to_string()).collect()),
        ..joined.clone()
    };
    assert!(declared(&[TaskAssigned::TYPE]).takes_tasks());
    assert!(!declared(&[ProposalOpened::TYPE]).takes_tasks());
    assert!(!declared(&[]).takes_tasks());
}

#[test]
fn unknown_and_missing_versions_are_typed_errors() {
    assert!(matches!(
        decode::<AgentJoined>(br#"{"v":3,"name":"x"}"#),
        Err(PayloadError::UnsupportedVersion { found: 3, .. })
    ));
    assert!(matches!(
        decode::<AgentLeft>(br#"{"reason":"x"}"#),
        Err(PayloadError::MissingVersion { .. })
    ));
    assert!(matches!(
        decode::<AgentLeft>(br#"{"v":1,"reason":5}"#),
        Err(PayloadError::Schema { .. })
    ));
    assert!(matches!(
        decode::<AgentLeft>(b"not json"),
        Err(PayloadError::Schema { .. })
    ));
}

#[test]
fn schemas_require_the_version() {
    let schema = json_schema::<AgentJoined>();
    assert_eq!(schema["properties"]["v"]["const"], 2);
    assert_eq!(schema["required"][0], "v");
    assert_eq!(schema["$id"], "urn:murmur:schema:dev.murmur.agent.joined:2");
}
