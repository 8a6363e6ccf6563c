//! # murmur-protocol
//!
//! murmur's wire protocol, with no I/O: the declared subject hierarchy, the typed and
//! versioned event catalog, roles and their permissions, the CloudEvents binding for NATS
//! (structured and binary modes), signed identities, the codec from typed payload to
//! verified event, grants, and the pure [`Projection`] trait every fold implements.
//!
//! It builds without async-nats and tokio, so pure code (the Nix generator, knowledge's
//! core) needs nothing more. The NATS I/O — the JetStream event log, projectors, the
//! auditor, connections — is `murmur-subjects`, which re-exports every module here.
//!
//! ```
//! use murmur_protocol::events::AgentLeft;
//! use murmur_protocol::{Draft, Identity, Token};
//! let me = Identity::generate();
//! let realm = Token::new("acme").unwrap();
//! let sealed = Draft::new(Token::new("agent-1").unwrap(), &AgentLeft { reason: "done".into() })
//!     .unwrap()
//!     .seal(&me, &realm);
//! assert_eq!(sealed.subject.as_str(), "murmur.v1.acme.evt.agent.agent-1.left");
//! ```

pub mod agent_protocol;
pub mod agent_sender;
pub mod binding;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod envelope;
pub mod events;
pub mod fold;
pub mod grants;
pub mod headers;
pub mod identity;
pub mod payload;
pub mod roles;
pub mod subject;

pub use catalog::{Catalog, EventType};
pub use codec::{Draft, EventCodec, IngestError, RefusedMessage, SealedEvent, VerifiedEvent};
pub use envelope::EventRecord;
pub use fold::{Projection, Refusal};
pub use headers::{HeaderSource, Headers};
pub use identity::Identity;
pub use payload::Payload;
pub use subject::{Domain, Plane, Subject, SubjectFilter, Token};
