//! Test support: events sealed, encoded and decoded as on the wire, stamped with a stream
//! sequence and a stored time, for folds tested with plain data.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use murmur_subjects::roles::{Role, RoleSet};
use murmur_subjects::{Draft, EventCodec, Identity, Payload, Token, VerifiedEvent};

/// A pretend stream in realm `r` starting at 2026-01-01T00:00:00Z.
pub(crate) struct Log {
    codec: EventCodec,
    realm: Token,
    seq: u64,
    /// Stored time of an event written `after_ms` = 0.
    pub(crate) start: DateTime<Utc>,
    /// The roles each key holds, stamped on its events as a projector's grants would.
    roles: HashMap<String, RoleSet>,
}

impl Log {
    pub(crate) fn new() -> Self {
        Self {
            codec: EventCodec::default(),
            realm: Token::new("r").expect("token"),
            seq: 0,
            start: "2026-01-01T00:00:00Z".parse().expect("time"),
            roles: HashMap::new(),
        }
    }

    /// From now on, `who`'s events carry `role` (as if granted in the log).
    pub(crate) fn grant(&mut self, who: &Identity, role: Role) {
        let set = self.roles.entry(who.public_key().to_string()).or_default();
        *set = set.with(role);
    }

    /// Seals, encodes and decodes like the wire does, stamping sequence and time.
    pub(crate) fn event<P: Payload>(
        &mut self,
        who: &Identity,
        aggregate: &str,
        p: &P,
        after_ms: i64,
    ) -> VerifiedEvent {
        let sealed = Draft::new(Token::new(aggregate).expect("token"), p)
            .expect("draft")
            .seal(who, &self.realm);
        let (h, b) = self.codec.encode(&sealed).expect("encode");
        let mut ev = self
            .codec
            .decode(sealed.subject.as_str(), Some(&h), &b)
            .expect("decode");
        self.seq += 1;
        ev.stream_sequence = Some(self.seq);
        ev.stored_at = Some(self.start + Duration::milliseconds(after_ms));
        ev.roles = self
            .roles
            .get(who.public_key())
            .copied()
            .unwrap_or_default();
        ev
    }
}
