//! # murmur-subjects
//!
//! The spine of murmur: the declared subject hierarchy, the typed and versioned event
//! catalog, the CloudEvents binding for NATS (structured and binary modes), signed
//! identities, and — at the I/O edge — the JetStream event log, dead-letter queue and
//! projections that every other crate builds on.
//!
//! The pure protocol (subjects, payloads, catalog, roles, envelope, binding, identity, codec,
//! grants, the fold trait) is the `murmur-protocol` crate, re-exported here module by module
//! so one path serves both. This crate adds the NATS I/O: [`log`], [`projection`]'s
//! projector, [`audit`], [`connect`], [`credentials`] and [`provision`].
//!
//! ```
//! use murmur_subjects::events::AgentLeft;
//! use murmur_subjects::{Draft, Identity, Token};
//! let me = Identity::generate();
//! let realm = Token::new("acme").unwrap();
//! let sealed = Draft::new(Token::new("agent-1").unwrap(), &AgentLeft { reason: "done".into() })
//!     .unwrap()
//!     .seal(&me, &realm);
//! assert_eq!(sealed.subject.as_str(), "murmur.v1.acme.evt.agent.agent-1.left");
//! ```

pub mod audit;
pub mod bulk;
pub mod connect;
pub mod credentials;
pub mod log;
pub mod projection;
pub mod provision;
mod read;

pub use murmur_protocol::{
    agent_protocol, agent_sender, binding, catalog, clock, codec, envelope, events, fold, grants,
    headers, identity, payload, roles, subject,
};

pub use bulk::{BulkAppended, BulkWriter};
pub use catalog::{Catalog, EventType};
pub use codec::{Draft, EventCodec, IngestError, RefusedMessage, SealedEvent, VerifiedEvent};
pub use envelope::EventRecord;
pub use headers::{HeaderSource, Headers};
pub use identity::Identity;
pub use log::{EventLog, EventLogOptions, LogConfig, LogError};
pub use payload::Payload;
pub use projection::{Projection, Projector, Refusal, StartAt};
pub use read::StoredMessage;
pub use subject::{Domain, Plane, Subject, SubjectFilter, Token};
