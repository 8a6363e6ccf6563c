//! From typed payload to signed NATS message and back: [`Draft`] → [`SealedEvent`] →
//! (headers, body) → [`VerifiedEvent`], with every refusal a typed [`IngestError`] that maps
//! to a [`DeadLetterReason`].

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::binding::{self, BindingError, ContentMode, DEFAULT_MAX_EVENT_BYTES};
use crate::catalog::{Catalog, EventType};
use crate::envelope::{EventRecord, JSON};
use crate::events::{DeadLetterReason, DeadLettered};
use crate::headers::{HeaderSource, Headers};
use crate::identity::{Identity, IdentityError, SignatureVerifier};
use crate::payload::{self, Payload, PayloadError};
use crate::roles::RoleSet;
use crate::subject::{Plane, Subject, SubjectError, Token};

/// Most messages a reader decodes together (a projector, the auditor, `murmur replay`, a
/// knowledge replica catching up): their single signatures are checked in one batch. The
/// larger the batch, the cheaper each signature, but the later its first event is folded.
pub const DECODED_TOGETHER: usize = 64;

/// An event about to be signed: payload, aggregate and lineage.
#[derive(Debug, Clone)]
pub struct Draft {
    event_type: EventType,
    aggregate: Token,
    data: Vec<u8>,
    id: Option<String>,
    lineage: Option<(String, String, Option<String>)>,
    time: Option<DateTime<Utc>>,
    recipient: Option<String>,
}

impl Draft {
    /// A new root event (its own correlation and causation) for `aggregate`.
    pub fn new<P: Payload>(aggregate: Token, payload: &P) -> Result<Self, PayloadError> {
        Ok(Self {
            event_type: EventType::of::<P>(),
            aggregate,
            data: payload::encode(payload)?,
            id: None,
            lineage: None,
            time: None,
            recipient: payload.recipient().map(str::to_string),
        })
    }

    /// Sets the event id (e.g. a deterministic id for a derived event, so that several
    /// emitters deriving the same fact are deduplicated by the server).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Makes this event a child of `parent`: same correlation id, causation = parent id,
    /// same trace.
    pub fn caused_by(mut self, parent: &EventRecord) -> Self {
        let correlation = parent
            .correlation_id
            .clone()
            .unwrap_or_else(|| parent.id.clone());
        self.lineage = Some((correlation, parent.id.clone(), parent.traceparent.clone()));
        self
    }

    /// Makes this event a child of the event with id `parent_id` in correlation
    /// `correlation_id` (for callers that kept the ids, not the whole parent record).
    pub fn caused_by_ids(
        mut self,
        correlation_id: impl Into<String>,
        parent_id: impl Into<String>,
        traceparent: Option<String>,
    ) -> Self {
        self.lineage = Some((correlation_id.into(), parent_id.into(), traceparent));
        self
    }

    /// Sets the event time (defaults to now).
    pub fn at(mut self, time: DateTime<Utc>) -> Self {
        self.time = Some(time);
        self
    }

    /// Signs the event as `identity` for `realm`.
    pub fn seal(self, identity: &Identity, realm: &Token) -> SealedEvent {
        let mut sealed = self.unsigned(identity, realm);
        identity.sign(&mut sealed.record, sealed.subject.as_str());
        sealed
    }

    /// Builds the record without signing it.
    fn unsigned(self, identity: &Identity, realm: &Token) -> SealedEvent {
        let id = self.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (correlation, causation, parent_trace) = match self.lineage {
            Some((c, p, t)) => (c, p, t),
            None => (id.clone(), id.clone(), None),
        };
        let subject = self.event_type.subject(realm, &self.aggregate);
        let record = EventRecord {
            id,
            source: identity.public_key().to_string(),
            ty: self.event_type.ty.to_string(),
            subject: Some(self.aggregate.as_str().to_string()),
            time: Some(self.time.unwrap_or_else(Utc::now)),
            datacontenttype: Some(JSON.to_string()),
            dataschema: None,
            correlation_id: Some(correlation),
            causation_id: Some(causation),
            traceparent: Some(child_traceparent(parent_trace.as_deref())),
            signature: None,
            extensions: Vec::new(),
            data: Some(Bytes::from(self.data)),
        };
        SealedEvent {
            subject,
            record,
            recipient: self.recipient,
        }
    }
}

/// Signs many drafts with one signature per [`crate::identity::MAX_SIGNATURE_BATCH`] events
/// (a Merkle batch signature; see [`crate::identity::BATCH_SIGNATURE_SCHEME`]). Each event
/// still verifies on its own.
pub fn seal_batch(
    drafts: impl IntoIterator<Item = Draft>,
    identity: &Identity,
    realm: &Token,
) -> Vec<SealedEvent> {
    let unsigned: Vec<SealedEvent> = drafts
        .into_iter()
        .map(|d| d.unsigned(identity, realm))
        .collect();
    let mut subjects = Vec::with_capacity(unsigned.len());
    let mut records = Vec::with_capacity(unsigned.len());
    let mut recipients = Vec::with_capacity(unsigned.len());
    for SealedEvent {
        subject,
        record,
        recipient,
    } in unsigned
    {
        subjects.push(subject);
        records.push(record);
        recipients.push(recipient);
    }
    let subject_refs: Vec<&str> = subjects.iter().map(Subject::as_str).collect();
    identity.sign_batch(&mut records, &subject_refs);
    subjects
        .into_iter()
        .zip(records)
        .zip(recipients)
        .map(|((subject, record), recipient)| SealedEvent {
            subject,
            record,
            recipient,
        })
        .collect()
}

/// A W3C `traceparent` continuing `parent`'s trace with a new span, or starting a new trace.
pub fn child_traceparent(parent: Option<&str>) -> String {
    let mut span = uuid::Uuid::encode_buffer();
    let span = &uuid::Uuid::new_v4().simple().encode_lower(&mut span)[..16];
    let mut fresh = uuid::Uuid::encode_buffer();
    let trace = parent
        .and_then(|p| {
            let mut parts = p.split('-');
            let trace = parts.nth(1)?;
            (trace.len() == 32 && parts.count() == 2).then_some(trace)
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().encode_lower(&mut fresh));
    let mut out = String::with_capacity(55);
    for part in ["00-", trace, "-", span, "-01"] {
        out.push_str(part);
    }
    out
}

/// A signed event and the subject it goes to.
#[derive(Debug, Clone)]
pub struct SealedEvent {
    /// Where it is published.
    pub subject: Subject,
    /// The signed CloudEvent.
    pub record: EventRecord,
    /// Whom it is addressed to ([`crate::payload::Payload::recipient`]), written by the log
    /// in the [`crate::headers::RECIPIENT`] header; not part of the signed record.
    pub recipient: Option<String>,
}

/// An event received, decoded, checked against the catalog and its subject, with a verified
/// signature.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    /// The subject it arrived on.
    pub subject: Subject,
    /// The CloudEvent.
    pub record: EventRecord,
    /// Its declared type.
    pub event_type: EventType,
    /// Stream sequence, when it came from a stream.
    pub stream_sequence: Option<u64>,
    /// When the stream stored it, when it came from a stream (the log's own clock).
    pub stored_at: Option<DateTime<Utc>>,
    /// The roles its emitter held at its position in the log, set by readers that fold
    /// the realm's grants ([`crate::grants::RoleBook::admit`]; every
    /// `murmur_subjects::Projector` does); empty otherwise.
    pub roles: RoleSet,
    /// The payload as decoded when its schema was checked, with the data it came from.
    decoded: Option<(Bytes, crate::catalog::DecodedPayload)>,
}

impl VerifiedEvent {
    /// The emitter's verified public key.
    pub fn emitter(&self) -> &str {
        &self.record.source
    }

    /// Decodes the payload as `P` (upgrading old schema versions).
    pub fn payload<P: Payload>(&self) -> Result<P, PayloadError> {
        if self.record.ty != P::TYPE {
            return Err(PayloadError::Schema {
                ty: P::TYPE,
                version: 0,
                source: <serde_json::Error as serde::de::Error>::custom(format!(
                    "event is of type {}",
                    self.record.ty
                )),
            });
        }
        let data = self
            .record
            .data
            .as_ref()
            .ok_or(PayloadError::NoData { ty: P::TYPE })?;
        // Decoded once, on receipt, while its schema was checked (unless the data has been
        // replaced since).
        if let Some((from, decoded)) = &self.decoded
            && from.as_ptr() == data.as_ptr()
            && from.len() == data.len()
            && let Some(p) = decoded.downcast_ref::<P>()
        {
            return Ok(p.clone());
        }
        payload::decode(data)
    }
}

/// Why an incoming message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Not a readable CloudEvent.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// The NATS subject is not a valid murmur subject.
    #[error("bad subject: {0}")]
    Subject(#[from] SubjectError),
    /// The event's subject does not match its type or aggregate.
    #[error("event of type {ty} does not belong on subject {subject}: {reason}")]
    SubjectMismatch {
        /// Event type.
        ty: String,
        /// NATS subject.
        subject: String,
        /// What does not match.
        reason: String,
    },
    /// The type is not declared.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The payload fails its schema.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The signature is missing or wrong.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A well-formed, verified event that its reader refuses (e.g. a knowledge change from an
    /// agent without write access, or change bytes that do not decode).
    #[error("refused ({reason}): {detail}")]
    Refused {
        /// The dead-letter reason to file it under.
        reason: DeadLetterReason,
        /// The reader's typed error, as text.
        detail: String,
    },
}

impl IngestError {
    /// The dead-letter reason for this error.
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            IngestError::Binding(BindingError::Malformed(_))
            | IngestError::Binding(BindingError::InvalidAttribute { .. }) => {
                DeadLetterReason::Malformed
            }
            IngestError::Binding(BindingError::MissingAttribute(_)) => {
                DeadLetterReason::MissingAttribute
            }
            IngestError::Binding(BindingError::WrongSpecVersion(_)) => {
                DeadLetterReason::WrongSpecVersion
            }
            IngestError::Binding(BindingError::Oversized { .. }) => DeadLetterReason::Oversized,
            IngestError::Subject(_) | IngestError::SubjectMismatch { .. } => {
                DeadLetterReason::BadSubject
            }
            IngestError::UnknownType(_) => DeadLetterReason::UnknownType,
            IngestError::Payload(_) => DeadLetterReason::SchemaViolation,
            IngestError::Identity(_) => DeadLetterReason::BadSignature,
            IngestError::Refused { reason, .. } => *reason,
        }
    }
}

/// A message refused on receipt, as it arrived: what a dead letter records.
#[derive(Debug, Clone, Copy)]
pub struct RefusedMessage<'a> {
    /// The NATS subject it came on.
    pub subject: &'a str,
    /// Its headers.
    pub headers: Option<&'a dyn HeaderSource>,
    /// Its bytes.
    pub body: &'a [u8],
    /// Where the stream stored it, if it was stored.
    pub stream_sequence: Option<u64>,
}

impl<'a> RefusedMessage<'a> {
    /// `message`, stored at `stream_sequence` (or not stored: core NATS).
    #[cfg(feature = "nats")]
    pub fn of(message: &'a async_nats::Message, stream_sequence: Option<u64>) -> Self {
        Self {
            subject: message.subject.as_str(),
            headers: message.headers.as_ref().map(|h| h as &dyn HeaderSource),
            body: &message.payload,
            stream_sequence,
        }
    }
}

/// Encodes and decodes murmur events: catalog, size limit, content mode, signature checks.
#[derive(Debug, Clone)]
pub struct EventCodec {
    catalog: Catalog,
    verifier: Arc<SignatureVerifier>,
    max_event_bytes: usize,
    mode: ContentMode,
}

impl Default for EventCodec {
    fn default() -> Self {
        Self::new(Catalog::standard().clone())
    }
}

impl EventCodec {
    /// A codec over `catalog` with the default size limit and structured mode.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            verifier: SignatureVerifier::shared(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            mode: ContentMode::Structured,
        }
    }

    /// Sets the event size limit (headers + body).
    pub fn max_event_bytes(mut self, limit: usize) -> Self {
        self.max_event_bytes = limit;
        self
    }

    /// Sets the content mode used for encoding.
    pub fn content_mode(mut self, mode: ContentMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks signatures with `verifier` instead of the process's shared one (a reader
    /// whose checks are counted on their own).
    pub fn verifier(mut self, verifier: Arc<SignatureVerifier>) -> Self {
        self.verifier = verifier;
        self
    }

    /// The verifier that checks the signatures of what this codec decodes.
    pub fn signature_verifier(&self) -> &SignatureVerifier {
        &self.verifier
    }

    /// The size limit.
    pub fn limit(&self) -> usize {
        self.max_event_bytes
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Encodes a sealed event for publishing.
    pub fn encode(&self, sealed: &SealedEvent) -> Result<(Headers, Bytes), BindingError> {
        binding::encode(&sealed.record, self.mode, self.max_event_bytes)
    }

    /// Decodes and fully checks one incoming message.
    pub fn decode<H: HeaderSource + ?Sized>(
        &self,
        nats_subject: &str,
        headers: Option<&H>,
        body: &Bytes,
    ) -> Result<VerifiedEvent, IngestError> {
        let event = self.decode_unverified(nats_subject, headers, body)?;
        self.verifier.verify(&event.record, nats_subject)?;
        Ok(event)
    }

    /// [`EventCodec::decode`] for messages that arrived together (`messages[i]`: subject,
    /// headers, body; murmur's readers pass up to [`DECODED_TOGETHER`]), with their
    /// signatures checked together
    /// ([`SignatureVerifier::verify_many`]): the same verdicts at a fraction of the cost
    /// when many carry a signature of their own.
    pub fn decode_many<H: HeaderSource + ?Sized>(
        &self,
        messages: &[(&str, Option<&H>, &Bytes)],
    ) -> Vec<Result<VerifiedEvent, IngestError>> {
        let mut decoded: Vec<Result<VerifiedEvent, IngestError>> = messages
            .iter()
            .map(|(subject, headers, body)| self.decode_unverified(subject, *headers, body))
            .collect();
        let checked: Vec<(usize, (&EventRecord, &str))> = decoded
            .iter()
            .enumerate()
            .filter_map(|(at, event)| Some((at, (&event.as_ref().ok()?.record, messages[at].0))))
            .collect();
        let pairs: Vec<(&EventRecord, &str)> = checked.iter().map(|(_, pair)| *pair).collect();
        let verdicts = self.verifier.verify_many(&pairs);
        let refused: Vec<(usize, IdentityError)> = checked
            .iter()
            .zip(verdicts)
            .filter_map(|((at, _), verdict)| verdict.err().map(|e| (*at, e)))
            .collect();
        for (at, error) in refused {
            decoded[at] = Err(error.into());
        }
        decoded
    }

    /// [`EventCodec::decode_many`] of NATS messages that arrived together.
    #[cfg(feature = "nats")]
    pub fn decode_messages<'m>(
        &self,
        messages: impl IntoIterator<Item = &'m async_nats::Message>,
    ) -> Vec<Result<VerifiedEvent, IngestError>> {
        let parts: Vec<_> = messages
            .into_iter()
            .map(|m| (m.subject.as_str(), m.headers.as_ref(), &m.payload))
            .collect();
        self.decode_many(&parts)
    }

    /// Every check of [`EventCodec::decode`] but the signature's.
    fn decode_unverified<H: HeaderSource + ?Sized>(
        &self,
        nats_subject: &str,
        headers: Option<&H>,
        body: &Bytes,
    ) -> Result<VerifiedEvent, IngestError> {
        let subject = Subject::parse(nats_subject)?;
        let record = binding::decode(headers, body, self.max_event_bytes)?;
        let event_type = *self
            .catalog
            .get(&record.ty)
            .ok_or_else(|| IngestError::UnknownType(record.ty.chars().take(120).collect()))?;
        let mismatch = |reason: String| IngestError::SubjectMismatch {
            ty: record.ty.clone(),
            subject: nats_subject.to_string(),
            reason,
        };
        if subject.plane() != event_type.plane
            || subject.domain() != event_type.domain
            || subject.verb().as_str() != event_type.verb
        {
            return Err(mismatch(format!("expected {}", event_type.pattern())));
        }
        if record.subject.as_deref() != Some(subject.aggregate().as_str()) {
            return Err(mismatch(format!(
                "event subject attribute {:?} is not the aggregate token {:?}",
                record.subject,
                subject.aggregate().as_str()
            )));
        }
        let data = record
            .data
            .as_ref()
            .ok_or(PayloadError::NoData { ty: event_type.ty })?;
        let decoded = (data.clone(), event_type.decode(data)?);
        Ok(VerifiedEvent {
            subject,
            record,
            event_type,
            stream_sequence: None,
            stored_at: None,
            roles: RoleSet::EMPTY,
            decoded: Some(decoded),
        })
    }

    /// Builds the dead-letter event for a refused message, signed by `detector`.
    ///
    /// The id is derived from the message (subject, stream sequence, body hash), so two
    /// consumers refusing the same stored message produce one dead letter after dedupe.
    pub fn dead_letter(
        &self,
        detector: &Identity,
        detector_name: &str,
        fallback_realm: &Token,
        error: &IngestError,
        refused: &RefusedMessage<'_>,
    ) -> SealedEvent {
        let RefusedMessage {
            subject: nats_subject,
            headers,
            body,
            stream_sequence,
        } = *refused;
        let reason = error.reason();
        let sha = hex(&Sha256::digest(body));
        // Keep the body only if the dead letter itself stays well under the limit.
        let keep_whole = body.len() <= self.max_event_bytes / 2;
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut original_headers = Vec::new();
        if let Some(h) = headers {
            h.visit(&mut |name, value, _| {
                original_headers.push((name.to_string(), value.to_string()))
            });
            original_headers.sort();
        }
        let payload = DeadLettered {
            reason,
            detail: error.to_string(),
            original_subject: nats_subject.chars().take(1024).collect(),
            original_headers,
            original_size: body.len(),
            sha256: sha.clone(),
            body_base64: keep_whole.then(|| b64.encode(body)),
            prefix_base64: (!keep_whole).then(|| b64.encode(&body[..body.len().min(1024)])),
            stream_sequence,
            detected_by: detector_name.to_string(),
        };
        let realm = Subject::parse(nats_subject)
            .map(|s| s.realm().clone())
            .unwrap_or_else(|_| fallback_realm.clone());
        let id_seed = format!("{nats_subject}\n{stream_sequence:?}\n{sha}");
        let id = hex(&Sha256::digest(id_seed.as_bytes())[..16]);
        let aggregate = Token::new(reason.as_str()).unwrap_or_else(|_| fallback_realm.clone());
        let draft = Draft::new(aggregate, &payload).unwrap_or_else(|e| {
            // DeadLettered always serializes; keep a minimal record if it somehow did not.
            tracing::error!(error = %e, "dead letter payload failed to encode");
            Draft {
                event_type: EventType::of::<DeadLettered>(),
                aggregate: Token::new(reason.as_str()).unwrap_or_else(|_| fallback_realm.clone()),
                data: b"{\"v\":1}".to_vec(),
                id: None,
                lineage: None,
                time: None,
                recipient: None,
            }
        });
        debug_assert_eq!(EventType::of::<DeadLettered>().plane, Plane::Dlq);
        draft.with_id(id).seal(detector, &realm)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AgentJoined, AgentLeft, Hardware};

    fn realm() -> Token {
        Token::new("acme").expect("token")
    }

    fn joined() -> AgentJoined {
        AgentJoined {
            name: "a".into(),
            kind: "tool".into(),
            capabilities: vec!["tool.fs".into()],
            labels: Default::default(),
            agent_version: "0".into(),
            hardware: Hardware::default(),
            slots: 1,
            handles: None,
        }
    }

    #[test]
    fn a_child_traceparent_continues_its_parents_trace_with_a_new_span() {
        let shape = |t: &str| {
            let parts: Vec<&str> = t.split('-').collect();
            assert_eq!(parts.len(), 4, "{t}");
            assert_eq!((parts[0], parts[3]), ("00", "01"), "{t}");
            assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{t}");
            assert!(t.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{t}");
            (parts[1].to_string(), parts[2].to_string())
        };
        let (trace, span) = shape(&child_traceparent(None));
        let (child_trace, child_span) =
            shape(&child_traceparent(Some(&format!("00-{trace}-{span}-01"))));
        assert_eq!(child_trace, trace);
        assert_ne!(child_span, span);
        for malformed in [
            "",
            "00-abc-def-01",
            &format!("00-{trace}-{span}"),
            &format!("00-{trace}-{span}-01-02"),
        ] {
            assert_ne!(
                shape(&child_traceparent(Some(malformed))).0,
                trace,
                "{malformed}"
            );
        }
    }

    #[test]
    fn every_codec_of_a_process_shares_its_verifier() {
        let a = EventCodec::default();
        let b = EventCodec::new(Catalog::standard().clone()).content_mode(ContentMode::Binary);
        assert!(Arc::ptr_eq(&a.verifier, &b.verifier));
        assert!(Arc::ptr_eq(&a.verifier, &SignatureVerifier::shared()));
    }

    #[test]
    fn a_payload_decoded_on_receipt_is_not_decoded_again_unless_its_data_changed() {
        let me = Identity::generate();
        let agg = Token::new(me.public_key()).expect("nkey is a token");
        let sealed = Draft::new(agg, &joined())
            .expect("draft")
            .seal(&me, &realm());
        let codec = EventCodec::default();
        let (h, body) = codec.encode(&sealed).expect("encode");
        let mut got = codec
            .decode(sealed.subject.as_str(), Some(&h), &body)
            .expect("decode");
        assert!(got.decoded.is_some(), "kept from the schema check");
        assert_eq!(got.payload::<AgentJoined>().expect("payload"), joined());
        assert!(got.payload::<AgentLeft>().is_err());
        // What is returned is the kept value, not a second decoding of the data: a kept
        // value swapped in for the same data comes back.
        let kept = AgentJoined {
            name: "kept".into(),
            ..joined()
        };
        let mut swapped = got.clone();
        if let Some((data, _)) = swapped.decoded.take() {
            swapped.decoded = Some((data, std::sync::Arc::new(kept.clone())));
        }
        assert_eq!(swapped.payload::<AgentJoined>().expect("payload"), kept);
        let renamed = AgentJoined {
            name: "b".into(),
            ..joined()
        };
        got.record.data = Some(Bytes::from(
            crate::payload::encode(&renamed).expect("encode"),
        ));
        assert_eq!(
            got.payload::<AgentJoined>().expect("payload"),
            renamed,
            "replaced data is decoded, not the kept payload returned"
        );
    }

    #[test]
    fn sealed_event_round_trips_in_both_modes() {
        let me = Identity::generate();
        let agg = Token::new(me.public_key()).expect("nkey is a token");
        let sealed = Draft::new(agg, &joined())
            .expect("draft")
            .seal(&me, &realm());
        assert_eq!(
            sealed.subject.as_str(),
            format!("murmur.v1.acme.evt.agent.{}.joined", me.public_key())
        );
        let r = &sealed.record;
        assert_eq!(r.correlation_id.as_deref(), Some(r.id.as_str()));
        assert_eq!(r.causation_id.as_deref(), Some(r.id.as_str()));
        for mode in [ContentMode::Binary, ContentMode::Structured] {
            let codec = EventCodec::default().content_mode(mode);
            let (h, body) = codec.encode(&sealed).expect("encode");
            let got = codec
                .decode(sealed.subject.as_str(), Some(&h), &body)
                .expect("decode");
            assert_eq!(got.payload::<AgentJoined>().expect("payload"), joined());
            assert_eq!(got.emitter(), me.public_key());
            assert!(got.payload::<AgentLeft>().is_err());
        }
    }

    #[test]
    fn batch_sealed_events_round_trip_one_by_one() {
        let me = Identity::generate();
        let drafts = (0..5).map(|i| {
            Draft::new(Token::new(format!("a{i}")).expect("token"), &joined()).expect("draft")
        });
        let sealed = seal_batch(drafts, &me, &realm());
        assert_eq!(sealed.len(), 5);
        for mode in [ContentMode::Binary, ContentMode::Structured] {
            // A fresh codec per event: no cached root, each event verifies on its own.
            for ev in &sealed {
                let codec = EventCodec::default().content_mode(mode);
                let (h, body) = codec.encode(ev).expect("encode");
                let got = codec
                    .decode(ev.subject.as_str(), Some(&h), &body)
                    .expect("verifies");
                assert_eq!(got.emitter(), me.public_key());
            }
        }
        // An event moved to another aggregate's subject no longer verifies.
        let codec = EventCodec::default().content_mode(ContentMode::Binary);
        let (h, body) = codec.encode(&sealed[0]).expect("encode");
        let mut h2 = h.clone();
        h2.insert("ce-subject", "a1");
        assert_eq!(
            codec
                .decode(sealed[1].subject.as_str(), Some(&h2), &body)
                .expect_err("moved")
                .reason(),
            DeadLetterReason::BadSignature
        );
    }

    /// A root event, its child and its grandchild, sealed by `me`.
    fn three_generations(me: &Identity) -> [SealedEvent; 3] {
        let agg = Token::new("a1").expect("token");
        let root = Draft::new(agg.clone(), &joined())
            .expect("draft")
            .seal(me, &realm());
        let child = Draft::new(agg.clone(), &AgentLeft { reason: "x".into() })
            .expect("draft")
            .caused_by(&root.record)
            .seal(me, &realm());
        let grandchild = Draft::new(agg, &AgentLeft { reason: "y".into() })
            .expect("draft")
            .caused_by(&child.record)
            .seal(me, &realm());
        [root, child, grandchild]
    }

    #[test]
    fn children_keep_correlation_and_trace() {
        let [root, child, grandchild] = three_generations(&Identity::generate());
        assert_eq!(
            child.record.correlation_id.as_deref(),
            Some(root.record.id.as_str())
        );
        assert_eq!(
            child.record.causation_id.as_deref(),
            Some(root.record.id.as_str())
        );
        assert_eq!(
            grandchild.record.correlation_id.as_deref(),
            Some(root.record.id.as_str())
        );
        assert_eq!(
            grandchild.record.causation_id.as_deref(),
            Some(child.record.id.as_str())
        );
        let trace = |r: &EventRecord| r.traceparent.as_deref().expect("trace")[3..35].to_string();
        assert_eq!(trace(&root.record), trace(&grandchild.record));
        assert_ne!(root.record.traceparent, child.record.traceparent);
    }

    #[test]
    fn defaults_stay_off_the_wire_and_read_back_as_written_out() {
        let me = Identity::generate();
        let [root, child, grandchild] = three_generations(&me);
        // (event, correlationid on the wire, causationid on the wire)
        let cases = [
            (&root, false, false),
            (&child, true, false),
            (&grandchild, true, true),
        ];
        for mode in [ContentMode::Binary, ContentMode::Structured] {
            let codec = EventCodec::default().content_mode(mode);
            for (event, correlation, causation) in cases {
                let (h, body) = codec.encode(event).expect("encode");
                let mut wire = String::from_utf8_lossy(&body).into_owned();
                h.visit(&mut |name, value, _| wire.push_str(&format!("\n{name}: {value}")));
                assert_eq!(wire.contains("correlationid"), correlation, "{wire}");
                assert_eq!(wire.contains("causationid"), causation, "{wire}");
                assert!(
                    !wire.contains("datacontenttype"),
                    "JSON is the default content type: {wire}"
                );
                let got = codec
                    .decode(event.subject.as_str(), Some(&h), &body)
                    .expect("verifies");
                assert_eq!(got.record, event.record, "{mode:?}");
            }
        }
        // A writer that spells every default out (murmur before it left them off, another
        // SDK) signs the same bytes: its event verifies and reads the same.
        let codec = EventCodec::default();
        for event in [&root, &child] {
            let (h, body) = codec.encode(event).expect("encode");
            let r = &event.record;
            let spelled = format!(
                r#"{{"correlationid":"{}","causationid":"{}","datacontenttype":"application/json",{}"#,
                r.correlation(),
                r.causation(),
                &String::from_utf8_lossy(&body)[1..]
            );
            let got = codec
                .decode(event.subject.as_str(), Some(&h), &Bytes::from(spelled))
                .expect("verifies with the defaults written out");
            assert_eq!(got.record, event.record);
        }
        // And one that leaves them out of what it signs (absent: their defaults) verifies too.
        let mut bare = child.clone();
        bare.record.causation_id = None;
        bare.record.datacontenttype = None;
        me.sign(&mut bare.record, bare.subject.as_str());
        assert_eq!(bare.record.signature, child.record.signature);
        let (h, body) = codec.encode(&bare).expect("encode");
        let got = codec
            .decode(bare.subject.as_str(), Some(&h), &body)
            .expect("verifies with the defaults left out of the signed record");
        assert_eq!(got.record, child.record);
        // Left out is not the same as written otherwise: a causation naming another event
        // than the one the signature covers does not verify.
        let (h, body) = codec.encode(&child).expect("encode");
        let forged = format!(
            r#"{{"causationid":"{}",{}"#,
            grandchild.record.id,
            &String::from_utf8_lossy(&body)[1..]
        );
        assert_eq!(
            codec
                .decode(child.subject.as_str(), Some(&h), &Bytes::from(forged))
                .expect_err("another causation")
                .reason(),
            DeadLetterReason::BadSignature
        );
    }

    #[test]
    fn refusals_map_to_reasons() {
        let me = Identity::generate();
        let codec = EventCodec::default().content_mode(ContentMode::Binary);
        let agg = Token::new("a1").expect("token");
        let sealed = Draft::new(agg, &joined())
            .expect("draft")
            .seal(&me, &realm());
        let (h, body) = codec.encode(&sealed).expect("encode");
        let reason = |subject: &str, h: &Headers, body: &Bytes| {
            codec
                .decode(subject, Some(h), body)
                .expect_err("refused")
                .reason()
        };
        // Wrong subject for the type.
        assert_eq!(
            reason("murmur.v1.acme.evt.agent.a1.left", &h, &body),
            DeadLetterReason::BadSubject
        );
        assert_eq!(
            reason("murmur.v1.acme.evt.agent.a2.joined", &h, &body),
            DeadLetterReason::BadSubject
        );
        assert_eq!(
            reason("not a subject", &h, &body),
            DeadLetterReason::BadSubject
        );
        // Tampered payload: schema still fine, signature not.
        let tampered = Bytes::from(
            String::from_utf8(body.to_vec())
                .expect("utf8")
                .replace("\"a\"", "\"b\""),
        );
        assert_eq!(
            reason(sealed.subject.as_str(), &h, &tampered),
            DeadLetterReason::BadSignature
        );
        // Payload failing its schema.
        let bad = Bytes::from_static(b"{\"v\":2,\"name\":1}");
        assert_eq!(
            reason(sealed.subject.as_str(), &h, &bad),
            DeadLetterReason::SchemaViolation
        );
        // Unknown type.
        let mut h2 = h.clone();
        h2.insert("ce-type", "dev.murmur.agent.exploded");
        assert_eq!(
            reason(sealed.subject.as_str(), &h2, &body),
            DeadLetterReason::UnknownType
        );
    }

    #[test]
    fn dead_letters_keep_bytes_or_prefix() {
        let me = Identity::generate();
        let codec = EventCodec::default().max_event_bytes(4096);
        let err = IngestError::Binding(BindingError::Oversized {
            size: 10_000,
            limit: 4096,
        });
        let body = vec![b'z'; 10_000];
        let refused = RefusedMessage {
            subject: "murmur.v1.acme.evt.task.t.submitted",
            headers: None,
            body: &body,
            stream_sequence: Some(7),
        };
        let dl = codec.dead_letter(&me, "test", &realm(), &err, &refused);
        assert_eq!(
            dl.subject.as_str(),
            "murmur.v1.acme.dlq.sys.oversized.dead_lettered"
        );
        let p: DeadLettered =
            payload::decode(dl.record.data.as_deref().expect("data")).expect("decodes");
        assert_eq!(p.original_size, 10_000);
        assert!(p.body_base64.is_none());
        assert_eq!(p.prefix_base64.as_ref().map(|s| s.len()), Some(1368));
        let again = codec.dead_letter(&me, "test", &realm(), &err, &refused);
        assert_eq!(again.record.id, dl.record.id, "deterministic id");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn header_name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z-]{1,16}",
                "ce-[a-z]{1,12}",
                Just("ce-specversion".to_string()),
                Just("ce-type".to_string()),
                Just("Content-Type".to_string()),
            ]
        }

        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..400),
                "\\{[ -~]{0,300}".prop_map(String::into_bytes),
                Just(br#"{"specversion":"1.0","id":"1","source":"s","type":"dev.murmur.task.submitted","data":{"v":1}}"#.to_vec()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn arbitrary_bytes_and_headers_never_panic(
                body in body(),
                headers in proptest::collection::vec((header_name(), "[ -~]{0,60}"), 0..8),
                subject in prop_oneof![Just("murmur.v1.a.evt.task.t.submitted".to_string()), "[a-z.*>]{0,40}"],
            ) {
                let mut h = Headers::new();
                for (k, v) in &headers {
                    h.insert(k.clone(), v.clone());
                }
                let codec = EventCodec::default().max_event_bytes(1024);
                let body = Bytes::from(body);
                let _ = binding::decode(Some(&h), &body, 1024);
                let _ = binding::decode(None::<&Headers>, &body, 1024);
                if let Err(e) = codec.decode(&subject, Some(&h), &body) {
                    // Every refusal has a reason and a message.
                    prop_assert!(!e.to_string().is_empty());
                    let _ = e.reason();
                }
            }
        }
    }
}
