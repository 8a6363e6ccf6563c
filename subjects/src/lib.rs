//! # murmur-subjects
//!
//! The spine of murmur: the declared subject hierarchy, the typed and versioned event
//! catalog, the CloudEvents binding for NATS (structured and binary modes), signed
//! identities, and — at the I/O edge — the JetStream event log, dead-letter queue and
//! projections that every other crate builds on.
//!
//! Pure modules (no I/O): [`subject`], [`payload`], [`events`], [`catalog`], [`envelope`],
//! [`binding`], [`identity`], [`codec`]. I/O modules: [`log`], [`projection`], [`audit`], [`connect`].
//!
//! ```
//! use murmur_subjects::{codec::Draft, events::AgentLeft, identity::Identity, subject::Token};
//! let me = Identity::generate();
//! let realm = Token::new("acme").unwrap();
//! let sealed = Draft::new(Token::new("agent-1").unwrap(), &AgentLeft { reason: "done".into() })
//!     .unwrap()
//!     .seal(&me, &realm);
//! assert_eq!(sealed.subject.as_str(), "murmur.v1.acme.evt.agent.agent-1.left");
//! ```

pub mod agent_protocol;
pub mod agent_sender;
pub mod audit;
pub mod binding;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod connect;
pub mod credentials;
pub mod envelope;
pub mod events;
pub mod grants;
pub mod identity;
pub mod log;
pub mod payload;
pub mod projection;
pub mod provision;
mod read;
pub mod roles;
pub mod subject;

pub use catalog::{Catalog, EventType};
pub use codec::{Draft, EventCodec, IngestError, RefusedMessage, SealedEvent, VerifiedEvent};
pub use envelope::EventRecord;
pub use identity::Identity;
pub use log::{EventLog, EventLogOptions, LogConfig, LogError};
pub use payload::Payload;
pub use projection::{Projection, Projector, StartAt};
pub use read::StoredMessage;
pub use subject::{Domain, Plane, Subject, SubjectFilter, Token};
