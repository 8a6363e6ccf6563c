//! The pure half of a projection: state derived from the log by a fold, with no I/O.
//!
//! A [`Projection`] is `apply(&mut state, &event)` plus the subject filters it reads;
//! `murmur-subjects`'s `Projector` feeds it from the log, live and on replay, with the same
//! `apply`.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::VerifiedEvent;
use crate::subject::{Subject, SubjectFilter};

/// A projection refused an event (e.g. a vote from outside the voter set). The state is left
/// unchanged and the refusal is counted and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refusal(pub String);

/// State derived from the log by a pure fold.
pub trait Projection: Send + Sync + 'static {
    /// The derived state.
    type State: Default + Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;

    /// A stable name (checkpoint key).
    fn name(&self) -> &str;

    /// The subjects it reads.
    fn filter(&self) -> SubjectFilter;

    /// The subjects it reads when one filter cannot say it (say, three verbs of one
    /// domain): the consumer filters on all of them, so the fold never decodes or
    /// verifies the rest. Default: [`Projection::filter`] alone.
    fn filters(&self) -> Vec<SubjectFilter> {
        vec![self.filter()]
    }

    /// One filter covering [`Projection::filters`] for the live consumer, when following the
    /// log through several would cost the server more than delivering the extra events: on
    /// a stream of many subjects, nats-server walks its whole subject index for a consumer
    /// of several filters each time that consumer's next match lies in a later message
    /// block (stalls of 50–200 ms every half second at 240,000 subjects), and it skips that
    /// walk for a consumer of one filter. The projector skips what this delivers beyond
    /// `filters` before decoding. Default: none (the consumer keeps `filters`).
    fn live_filter(&self) -> Option<SubjectFilter> {
        None
    }

    /// The participant (public key) this projection follows, when it keeps only the events
    /// addressed to one participant (a worker's assignments): a delivery whose
    /// `Murmur-Recipient` header ([`crate::payload::Payload::recipient`]) names another is
    /// passed over before decoding, so each of many workers does not decode every other
    /// worker's assignments. Only the header can make the projector skip; what is decoded is
    /// still judged by its signed payload. Default: none (every delivery is decoded).
    fn recipient(&self) -> Option<&str> {
        None
    }

    /// Folds one event into the state. Must be pure: no I/O, no clock, no randomness —
    /// time comes from the event (`stored_at` / `record.time`).
    fn apply(&self, state: &mut Self::State, event: &VerifiedEvent) -> Result<(), Refusal>;

    /// Sees every stored message the projector reads, before decoding — so also those the
    /// fold refuses and those that do not decode or verify — with its subject (when the NATS
    /// subject parses) and stream sequence. For bookkeeping that follows the log itself
    /// rather than the accepted events: an aggregate's last stored sequence, which the
    /// server's expected-last-subject-sequence check counts for every stored message. If
    /// a refused event (a late result from a lost lease) or a forged one left a task's
    /// expected sequence behind, every later write to that task would conflict, on replay
    /// too. Must be pure. Default: nothing.
    fn observe(&self, _state: &mut Self::State, _subject: &Subject, _sequence: u64) {}
}
