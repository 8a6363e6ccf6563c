//! The declared subject hierarchy.
//!
//! Every murmur subject has exactly seven tokens at fixed positions:
//!
//! ```text
//! murmur . v1 . {realm} . {plane} . {domain} . {aggregate} . {verb}
//!   0       1      2         3         4           5           6
//! ```
//!
//! * `realm` – tenant / installation scope, so several realms share one cluster.
//! * `plane` – what carries the message: `evt` (persisted in the history stream), `live`
//!   (core NATS only, e.g. heartbeats), `dlq` (dead letters), `rpc` (request/reply).
//! * `domain` – the aggregate kind (`agent`, `task`, ...).
//! * `aggregate` – the aggregate id, always at position 5, so one aggregate replays with the
//!   filter `murmur.v1.{realm}.evt.{domain}.{id}.*`.
//! * `verb` – the event verb (`joined`, `submitted`, ...), so consumers filter by event kind
//!   without decoding. Because the verb is a token, optimistic concurrency per aggregate uses
//!   `Nats-Expected-Last-Subject-Sequence-Subject` with the aggregate filter.
//!
//! Tokens of concrete subjects match `[A-Za-z0-9_-]{1,63}`; the whole subject is at most
//! 255 bytes. Wildcards (`*`, `>`) appear only in [`SubjectFilter`]s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// First token of every murmur subject.
pub const ROOT: &str = "murmur";
/// Second token: the version of the subject hierarchy.
pub const HIERARCHY_VERSION: &str = "v1";
/// Longest allowed token.
pub const MAX_TOKEN_LEN: usize = 63;
/// Longest allowed subject.
pub const MAX_SUBJECT_LEN: usize = 255;
/// Number of tokens in every concrete subject.
pub const TOKEN_COUNT: usize = 7;

/// Why a subject or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// A token was empty (e.g. `a..b`).
    #[error("empty token at position {position} in {subject:?}")]
    EmptyToken {
        /// The offending subject.
        subject: String,
        /// Zero-based token index.
        position: usize,
    },
    /// A token was longer than [`MAX_TOKEN_LEN`].
    #[error("token {token:?} is {len} bytes long; at most {MAX_TOKEN_LEN} allowed")]
    TokenTooLong {
        /// The offending token (truncated to 80 chars).
        token: String,
        /// Its length.
        len: usize,
    },
    /// A token contained a character outside `[A-Za-z0-9_-]`.
    #[error("token {token:?} contains {ch:?}; tokens use only A-Z a-z 0-9 _ -")]
    InvalidChar {
        /// The offending token.
        token: String,
        /// The first invalid character.
        ch: char,
    },
    /// A wildcard appeared where a concrete subject was required.
    #[error("wildcard {token:?} in {subject:?}; wildcards are allowed only in filters")]
    WildcardInSubject {
        /// The offending subject.
        subject: String,
        /// The wildcard token.
        token: String,
    },
    /// `>` was not the last token of a filter.
    #[error("'>' must be the last token of a filter: {filter:?}")]
    TailWildcardNotLast {
        /// The offending filter.
        filter: String,
    },
    /// The subject exceeded [`MAX_SUBJECT_LEN`].
    #[error("subject is {len} bytes long; at most {MAX_SUBJECT_LEN} allowed")]
    SubjectTooLong {
        /// Its length.
        len: usize,
    },
    /// Wrong number of tokens.
    #[error("subject {subject:?} has {count} tokens; murmur subjects have {TOKEN_COUNT}")]
    WrongTokenCount {
        /// The offending subject.
        subject: String,
        /// How many tokens it had.
        count: usize,
    },
    /// The subject does not start with `murmur.v1`.
    #[error("subject {subject:?} is not under {ROOT}.{HIERARCHY_VERSION}")]
    ForeignRoot {
        /// The offending subject.
        subject: String,
    },
    /// Unknown plane token.
    #[error("unknown plane {0:?}; expected evt, live, dlq or rpc")]
    UnknownPlane(String),
    /// Unknown domain token.
    #[error("unknown domain {0:?}")]
    UnknownDomain(String),
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks one concrete token.
pub fn validate_token(token: &str) -> Result<(), SubjectError> {
    if token.is_empty() {
        return Err(SubjectError::EmptyToken {
            subject: String::new(),
            position: 0,
        });
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(SubjectError::TokenTooLong {
            token: truncate(token),
            len: token.len(),
        });
    }
    if let Some(ch) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        if ch == '*' || ch == '>' {
            return Err(SubjectError::WildcardInSubject {
                subject: truncate(token),
                token: truncate(token),
            });
        }
        return Err(SubjectError::InvalidChar {
            token: truncate(token),
            ch,
        });
    }
    Ok(())
}

/// A validated subject token (realm, aggregate id, verb).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Token(String);

impl Token {
    /// Validates and wraps a token.
    pub fn new(token: impl Into<String>) -> Result<Self, SubjectError> {
        let token = token.into();
        validate_token(&token)?;
        Ok(Self(token))
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Token {
    type Error = SubjectError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Token::new(value)
    }
}

impl TryFrom<&str> for Token {
    type Error = SubjectError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Token::new(value)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        t.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Token {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What carries a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Persisted in the history stream: the source of truth.
    Evt,
    /// Core NATS only, never persisted (heartbeats, progress pings).
    Live,
    /// Dead letters, persisted in the dead-letter stream.
    Dlq,
    /// Request/reply endpoints.
    Rpc,
}

impl Plane {
    /// All planes, in declaration order.
    pub const ALL: [Plane; 4] = [Plane::Evt, Plane::Live, Plane::Dlq, Plane::Rpc];

    /// The token for this plane.
    pub const fn as_str(self) -> &'static str {
        match self {
            Plane::Evt => "evt",
            Plane::Live => "live",
            Plane::Dlq => "dlq",
            Plane::Rpc => "rpc",
        }
    }
}

impl FromStr for Plane {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plane::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| SubjectError::UnknownPlane(truncate(s)))
    }
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The aggregate kinds murmur declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// Agents: joined, heartbeat, left, offline.
    Agent,
    /// Tasks: submitted, assigned, completed, failed.
    Task,
    /// The platform itself: dead letters, redrives.
    Sys,
    /// Consensus: proposals, votes, decisions.
    Proposal,
    /// Knowledge spaces: owner, access grants, snapshots.
    Space,
    /// Knowledge documents: Automerge changes, one aggregate per document.
    Knowledge,
    /// Authority: the realm's owner and the roles granted to participants, one aggregate
    /// per participant key.
    Role,
}

impl Domain {
    /// All domains, in declaration order.
    pub const ALL: [Domain; 7] = [
        Domain::Agent,
        Domain::Task,
        Domain::Sys,
        Domain::Proposal,
        Domain::Space,
        Domain::Knowledge,
        Domain::Role,
    ];

    /// The token for this domain.
    pub const fn as_str(self) -> &'static str {
        match self {
            Domain::Agent => "agent",
            Domain::Task => "task",
            Domain::Sys => "sys",
            Domain::Proposal => "proposal",
            Domain::Space => "space",
            Domain::Knowledge => "knowledge",
            Domain::Role => "role",
        }
    }
}

impl FromStr for Domain {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| SubjectError::UnknownDomain(truncate(s)))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A concrete, validated murmur subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    realm: Token,
    plane: Plane,
    domain: Domain,
    aggregate: Token,
    verb: Token,
    rendered: String,
}

impl Subject {
    /// Builds a subject from its parts.
    pub fn new(realm: Token, plane: Plane, domain: Domain, aggregate: Token, verb: Token) -> Self {
        let rendered =
            format!("{ROOT}.{HIERARCHY_VERSION}.{realm}.{plane}.{domain}.{aggregate}.{verb}");
        Self {
            realm,
            plane,
            domain,
            aggregate,
            verb,
            rendered,
        }
    }

    /// Parses and validates a subject string.
    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        if subject.len() > MAX_SUBJECT_LEN {
            return Err(SubjectError::SubjectTooLong { len: subject.len() });
        }
        // Every subject an event arrives on is parsed: the tokens stay on the stack.
        let mut tokens = [""; TOKEN_COUNT];
        let mut count = 0;
        for (position, t) in subject.split('.').enumerate() {
            if t.is_empty() {
                return Err(SubjectError::EmptyToken {
                    subject: truncate(subject),
                    position,
                });
            }
            if t == "*" || t == ">" {
                return Err(SubjectError::WildcardInSubject {
                    subject: truncate(subject),
                    token: t.to_string(),
                });
            }
            if let Some(slot) = tokens.get_mut(position) {
                *slot = t;
            }
            count += 1;
        }
        if count != TOKEN_COUNT {
            return Err(SubjectError::WrongTokenCount {
                subject: truncate(subject),
                count,
            });
        }
        if tokens[0] != ROOT || tokens[1] != HIERARCHY_VERSION {
            return Err(SubjectError::ForeignRoot {
                subject: truncate(subject),
            });
        }
        let realm = Token::new(tokens[2])?;
        let plane: Plane = tokens[3].parse()?;
        let domain: Domain = tokens[4].parse()?;
        let aggregate = Token::new(tokens[5])?;
        let verb = Token::new(tokens[6])?;
        Ok(Self {
            realm,
            plane,
            domain,
            aggregate,
            verb,
            rendered: subject.to_string(),
        })
    }

    /// The realm token.
    pub fn realm(&self) -> &Token {
        &self.realm
    }
    /// The plane.
    pub fn plane(&self) -> Plane {
        self.plane
    }
    /// The domain.
    pub fn domain(&self) -> Domain {
        self.domain
    }
    /// The aggregate id token.
    pub fn aggregate(&self) -> &Token {
        &self.aggregate
    }
    /// The verb token.
    pub fn verb(&self) -> &Token {
        &self.verb
    }
    /// The rendered subject.
    pub fn as_str(&self) -> &str {
        &self.rendered
    }

    /// The filter matching every event of this subject's aggregate (any verb): the subject
    /// used for per-aggregate optimistic concurrency and per-aggregate replay.
    pub fn aggregate_filter(&self) -> SubjectFilter {
        SubjectFilter::plane(self.plane)
            .realm(self.realm.clone())
            .domain(self.domain)
            .aggregate(self.aggregate.clone())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl FromStr for Subject {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Subject::parse(s)
    }
}

/// A subject filter with wildcards at fixed positions; unset parts are `*`.
///
/// ```
/// use murmur_protocol::{Domain, Plane, SubjectFilter, Token};
/// let f = SubjectFilter::plane(Plane::Evt)
///     .realm(Token::new("acme").unwrap())
///     .domain(Domain::Task);
/// assert_eq!(f.to_string(), "murmur.v1.acme.evt.task.*.*");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SubjectFilter {
    realm: Option<Token>,
    plane: Option<Plane>,
    domain: Option<Domain>,
    aggregate: Option<Token>,
    verb: Option<Token>,
}

impl SubjectFilter {
    /// Every murmur subject of every plane: `murmur.v1.>`-equivalent with fixed arity.
    pub fn any() -> Self {
        Self::default()
    }
    /// Every subject of one plane.
    pub fn plane(plane: Plane) -> Self {
        Self {
            plane: Some(plane),
            ..Self::default()
        }
    }
    /// Restricts to one realm.
    pub fn realm(mut self, realm: Token) -> Self {
        self.realm = Some(realm);
        self
    }
    /// Restricts to one domain.
    pub fn domain(mut self, domain: Domain) -> Self {
        self.domain = Some(domain);
        self
    }
    /// Restricts to one aggregate.
    pub fn aggregate(mut self, aggregate: Token) -> Self {
        self.aggregate = Some(aggregate);
        self
    }
    /// Restricts to one verb.
    pub fn verb(mut self, verb: Token) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Parses a filter written as a NATS subject with `*` and `>` wildcards. The filter must
    /// address murmur subjects (`murmur.v1...`) and `>` may only be last.
    pub fn parse(filter: &str) -> Result<Self, SubjectError> {
        if filter.len() > MAX_SUBJECT_LEN {
            return Err(SubjectError::SubjectTooLong { len: filter.len() });
        }
        let tokens: Vec<&str> = filter.split('.').collect();
        for (position, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                return Err(SubjectError::EmptyToken {
                    subject: truncate(filter),
                    position,
                });
            }
            if *t == ">" && position + 1 != tokens.len() {
                return Err(SubjectError::TailWildcardNotLast {
                    filter: truncate(filter),
                });
            }
        }
        let tail = tokens.last() == Some(&">");
        let fixed = if tail { tokens.len() - 1 } else { tokens.len() };
        if fixed > TOKEN_COUNT || (!tail && tokens.len() != TOKEN_COUNT) {
            return Err(SubjectError::WrongTokenCount {
                subject: truncate(filter),
                count: tokens.len(),
            });
        }
        let get = |i: usize| -> Option<&str> {
            tokens.get(i).copied().filter(|t| i < fixed && *t != "*")
        };
        if (fixed > 0 && tokens[0] != ROOT && tokens[0] != "*")
            || (fixed > 1 && tokens[1] != HIERARCHY_VERSION && tokens[1] != "*")
        {
            return Err(SubjectError::ForeignRoot {
                subject: truncate(filter),
            });
        }
        Ok(Self {
            realm: get(2).map(Token::new).transpose()?,
            plane: get(3).map(str::parse).transpose()?,
            domain: get(4).map(str::parse).transpose()?,
            aggregate: get(5).map(Token::new).transpose()?,
            verb: get(6).map(Token::new).transpose()?,
        })
    }

    /// Whether subjects of this plane, domain and verb can match (realm and aggregate aside).
    pub fn admits(&self, plane: Plane, domain: Domain, verb: &str) -> bool {
        self.plane.is_none_or(|p| p == plane)
            && self.domain.is_none_or(|d| d == domain)
            && self.verb.as_ref().is_none_or(|v| v.as_str() == verb)
    }

    /// Whether a concrete subject matches this filter.
    pub fn matches(&self, subject: &Subject) -> bool {
        self.realm.as_ref().is_none_or(|r| r == subject.realm())
            && self.plane.is_none_or(|p| p == subject.plane())
            && self.domain.is_none_or(|d| d == subject.domain())
            && self
                .aggregate
                .as_ref()
                .is_none_or(|a| a == subject.aggregate())
            && self.verb.as_ref().is_none_or(|v| v == subject.verb())
    }
}

impl fmt::Display for SubjectFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn part<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "*".to_string(), |t| t.to_string())
        }
        write!(
            f,
            "{ROOT}.{HIERARCHY_VERSION}.{}.{}.{}.{}.{}",
            part(&self.realm),
            part(&self.plane),
            part(&self.domain),
            part(&self.aggregate),
            part(&self.verb)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Token {
        Token::new(s).expect("valid token")
    }

    #[test]
    fn builds_and_parses_round_trip() {
        let s = Subject::new(
            t("acme"),
            Plane::Evt,
            Domain::Task,
            t("0192-abc"),
            t("submitted"),
        );
        assert_eq!(s.as_str(), "murmur.v1.acme.evt.task.0192-abc.submitted");
        let p = Subject::parse(s.as_str()).expect("parses");
        assert_eq!(p, s);
        assert_eq!(p.aggregate().as_str(), "0192-abc");
        assert_eq!(
            s.aggregate_filter().to_string(),
            "murmur.v1.acme.evt.task.0192-abc.*"
        );
    }

    #[test]
    fn rejects_bad_tokens() {
        assert!(matches!(
            Token::new(""),
            Err(SubjectError::EmptyToken { .. })
        ));
        assert!(matches!(
            Token::new("a b"),
            Err(SubjectError::InvalidChar { ch: ' ', .. })
        ));
        assert!(matches!(
            Token::new("a.b"),
            Err(SubjectError::InvalidChar { ch: '.', .. })
        ));
        assert!(matches!(
            Token::new("*"),
            Err(SubjectError::WildcardInSubject { .. })
        ));
        assert!(matches!(
            Token::new("x".repeat(64)),
            Err(SubjectError::TokenTooLong { len: 64, .. })
        ));
        assert!(Token::new("x".repeat(63)).is_ok());
        assert!(Token::new("UABCD-ef_09").is_ok());
    }

    #[test]
    fn rejects_bad_subjects() {
        let cases = [
            ("murmur.v1.acme.evt.task..submitted", "empty token"),
            ("murmur.v1.acme.evt.task.*.submitted", "wildcard"),
            ("murmur.v1.acme.evt.task.id", "tokens"),
            ("other.v1.acme.evt.task.id.x", "not under"),
            ("murmur.v1.acme.nope.task.id.x", "unknown plane"),
            ("murmur.v1.acme.evt.nope.id.x", "unknown domain"),
            ("murmur.v1.ac me.evt.task.id.x", "contains"),
        ];
        for (s, needle) in cases {
            let err = Subject::parse(s).expect_err(s).to_string();
            assert!(err.contains(needle), "{s}: {err}");
        }
        let long = format!("murmur.v1.{}.evt.task.id.x", "a.".repeat(130));
        assert!(matches!(
            Subject::parse(&long),
            Err(SubjectError::SubjectTooLong { .. })
        ));
    }

    #[test]
    fn filters_parse_and_match() {
        let f = SubjectFilter::parse("murmur.v1.acme.evt.task.*.*").expect("filter");
        assert_eq!(f.to_string(), "murmur.v1.acme.evt.task.*.*");
        let s = Subject::parse("murmur.v1.acme.evt.task.t1.submitted").expect("subject");
        assert!(f.matches(&s));
        let other = Subject::parse("murmur.v1.acme.evt.agent.a1.joined").expect("subject");
        assert!(!f.matches(&other));
        let tail = SubjectFilter::parse("murmur.v1.acme.>").expect("tail");
        assert!(tail.matches(&other));
        assert!(SubjectFilter::parse("murmur.>.acme").is_err());
        assert!(SubjectFilter::parse("murmur.v1..evt.>").is_err());
    }
}
