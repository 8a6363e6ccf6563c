//! The subjects and names of the Synadia Agent Protocol (v0.3,
//! `synadia-ai/synadia-agent-sdk-docs` core-protocol.md), which murmur speaks next to its
//! own: a NATS micro service named `agents` per protocol agent, a `prompt` endpoint at
//! `agents.prompt.{agent}.{owner}.{session}` (queue group `agents`) answering with a stream
//! of chunks, a `status` endpoint, and heartbeats on `agents.hb.{agent}.{owner}.{session}`.
//! Its subjects live outside `murmur.v1.…`: they are the protocol's, shared with every agent
//! platform that speaks it. The SDKs take replies on `_INBOX.agents.…`, one prefix for
//! every caller, so that prefix is what a role that prompts or answers is granted.

/// Why an agent address was refused: the protocol's §2 token rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} {value:?} must be {rule} (Synadia Agent Protocol §2)")]
pub struct AddressError {
    /// Which part: agent, owner or session.
    pub part: &'static str,
    /// The value given.
    pub value: String,
    /// What it must be.
    pub rule: &'static str,
}

/// The micro-service name every protocol agent registers under.
pub const SERVICE_NAME: &str = "agents";
/// The protocol version murmur speaks (`metadata.protocol_version`).
pub const PROTOCOL_VERSION: &str = "0.3";
/// The queue group of the `prompt` and `status` endpoints.
pub const QUEUE_GROUP: &str = "agents";
/// The reply-inbox prefix the protocol's SDKs use for every caller.
pub const SDK_INBOX_PREFIX: &str = "_INBOX.agents";
/// Every heartbeat.
pub const HEARTBEATS: &str = "agents.hb.*.*.*";
/// Every prompt endpoint.
pub const PROMPTS: &str = "agents.prompt.*.*.*";
/// Every status endpoint.
pub const STATUSES: &str = "agents.status.*.*.*";
/// Every SDK reply inbox.
pub const SDK_INBOXES: &str = "_INBOX.agents.>";

/// A fresh reply inbox under the SDKs' prefix (which hosts may publish to).
pub fn sdk_inbox() -> String {
    format!("{SDK_INBOX_PREFIX}.{}", uuid::Uuid::new_v4().simple())
}

/// Where discovery asks every protocol agent for its `$SRV.INFO`.
pub const DISCOVERY_SUBJECT: &str = "$SRV.INFO.agents";

/// One protocol agent's address: agent name, owner and session, each a subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAddress {
    agent: String,
    owner: String,
    session: String,
}

impl AgentAddress {
    /// Checks the parts as the protocol's SDKs do: the agent lowercase letters, digits and
    /// `-`; owner and session also `_`.
    pub fn new(
        agent: impl Into<String>,
        owner: impl Into<String>,
        session: impl Into<String>,
    ) -> Result<Self, AddressError> {
        let address = Self {
            agent: agent.into(),
            owner: owner.into(),
            session: session.into(),
        };
        let lower = |c: char, extra: &[char]| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c)
        };
        for (part, value, extra, rule) in [
            (
                "agent",
                &address.agent,
                &[][..],
                "lowercase letters, digits and -",
            ),
            (
                "owner",
                &address.owner,
                &['_'][..],
                "lowercase letters, digits, _ and -",
            ),
            (
                "session",
                &address.session,
                &['_'][..],
                "lowercase letters, digits, _ and -",
            ),
        ] {
            if value.is_empty() || value.len() > 64 || !value.chars().all(|c| lower(c, extra)) {
                return Err(AddressError {
                    part,
                    value: value.chars().take(80).collect(),
                    rule,
                });
            }
        }
        Ok(address)
    }

    /// The agent's name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Its owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Its session.
    pub fn session(&self) -> &str {
        &self.session
    }

    fn subject(&self, kind: &str) -> String {
        format!(
            "agents.{kind}.{}.{}.{}",
            self.agent, self.owner, self.session
        )
    }

    /// Where prompts arrive.
    pub fn prompt_subject(&self) -> String {
        self.subject("prompt")
    }

    /// Where status requests arrive.
    pub fn status_subject(&self) -> String {
        self.subject("status")
    }

    /// Where its heartbeats go.
    pub fn heartbeat_subject(&self) -> String {
        self.subject("hb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_three_tokens() {
        let a = AgentAddress::new("murmur-llm", "acme", "default").expect("valid");
        assert_eq!(a.prompt_subject(), "agents.prompt.murmur-llm.acme.default");
        assert_eq!(a.status_subject(), "agents.status.murmur-llm.acme.default");
        assert_eq!(a.heartbeat_subject(), "agents.hb.murmur-llm.acme.default");
        assert!(AgentAddress::new("llm.generate", "acme", "default").is_err());
        assert!(AgentAddress::new("llm", "", "default").is_err());
        assert!(AgentAddress::new("LLM", "acme", "default").is_err());
        assert!(AgentAddress::new("l_m", "acme", "default").is_err());
        assert!(AgentAddress::new("llm", "a_b", "s_1").is_ok());
        assert!(sdk_inbox().starts_with("_INBOX.agents."));
    }
}
