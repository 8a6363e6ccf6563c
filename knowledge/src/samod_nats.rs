//! samod — the Rust automerge-repo — over NATS: [`GatewayDialer`] connects a samod `Repo` to a
//! memory agent's automerge-repo gateway ([`crate::repo`]), as `examples/automerge-repo`'s
//! adapter does for JavaScript: each frame signed with the peer's nkey, and only frames the
//! gateway's key signed taken. The `samod` feature.
//!
//! A peer's edits count only when they keep the knowledge layout with the peer's key as the
//! Automerge actor ([`crate::space::actor_for`]): set it with `Automerge::set_actor` in
//! `DocHandle::with_document` before changing anything.

use std::convert::Infallible;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use murmur_protocol::identity::SignatureVerifier;
use murmur_subjects::roles::{KNOWLEDGE_REPO, repo_inbox};
use murmur_subjects::{Identity, Token};
use samod::{DialError, Dialer, Transport, Url};

use crate::repo::frame_signed_bytes;
use crate::sync::{SESSION_HEADER, SIGNATURE_HEADER, SIGNER_HEADER};

/// Dials a memory agent's gateway over an existing NATS connection, as `identity` (the key
/// of the connection's credentials in a secure realm).
#[derive(Clone)]
pub struct GatewayDialer {
    client: async_nats::Client,
    realm: Token,
    gateway: String,
    identity: Identity,
}

impl std::fmt::Debug for GatewayDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayDialer")
            .field("realm", &self.realm)
            .field("gateway", &self.gateway)
            .field("peer", &self.identity.public_key())
            .finish()
    }
}

impl GatewayDialer {
    /// A dialer to the gateway of the memory agent with key `gateway` in `realm`.
    pub fn new(
        client: async_nats::Client,
        realm: Token,
        gateway: &str,
        identity: Identity,
    ) -> Self {
        Self {
            client,
            realm,
            gateway: gateway.to_string(),
            identity,
        }
    }
}

/// Why a gateway cannot be dialed at all.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a gateway key (a subject token)")]
pub struct BadGateway(String);

impl Dialer for GatewayDialer {
    type Error = BadGateway;

    fn url(&self) -> Url {
        let text = format!("nats://murmur/{}/{}", self.realm.as_str(), self.gateway);
        Url::parse(&text).unwrap_or_else(|_| Url::parse("nats://murmur/").expect("literal"))
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Self::Error>>> {
        let this = self.clone();
        async move {
            let gateway_token = Token::new(&this.gateway)
                .map_err(|_| DialError::PermanentFailure(BadGateway(this.gateway.clone())))?;
            let subject = KNOWLEDGE_REPO
                .subject(&this.realm, &gateway_token)
                .to_string();
            // A fresh session per connection: the gateway keeps one sync state per session.
            let session = format!("s{}", uuid::Uuid::new_v4().simple());
            let inbox = repo_inbox(this.identity.public_key(), &session);
            let subscription = this
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(DialError::transient)?;
            let verifier = SignatureVerifier::new();
            let (gateway, reading) = (this.gateway.clone(), session.clone());
            // Frames go out with the inbox as their reply subject, so the server answers
            // "no responders" when no gateway listens (it restarts): the frame is lost, so
            // the transport ends and samod's dialer connects again (a new session, a join).
            let frames = subscription
                .take_while(|message| {
                    futures::future::ready(
                        message.status != Some(async_nats::StatusCode::NO_RESPONDERS),
                    )
                })
                .filter_map(move |message| {
                    let header = |name: &str| crate::rpc::header(&message, name);
                    let genuine = header(SIGNER_HEADER) == gateway
                        && verifier
                            .verify_detached(
                                &gateway,
                                &frame_signed_bytes(&reading, &message.payload),
                                &header(SIGNATURE_HEADER),
                            )
                            .is_ok();
                    if !genuine {
                        tracing::warn!("a repo frame not signed by the gateway was dropped");
                    }
                    futures::future::ready(
                        genuine.then(|| Ok::<_, Infallible>(message.payload.to_vec())),
                    )
                });
            let state = (this.client, subject, this.identity, session, inbox);
            let sink = futures::sink::unfold(
                state,
                |(client, subject, identity, session, inbox), frame: Vec<u8>| async move {
                    let signature = identity.sign_detached(&frame_signed_bytes(&session, &frame));
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(SIGNER_HEADER, identity.public_key());
                    headers.insert(SESSION_HEADER, session.as_str());
                    headers.insert(SIGNATURE_HEADER, signature.as_str());
                    client
                        .publish_with_reply_and_headers(
                            subject.clone(),
                            inbox.clone(),
                            headers,
                            frame.into(),
                        )
                        .await?;
                    Ok::<_, async_nats::PublishError>((client, subject, identity, session, inbox))
                },
            );
            Ok(Transport::new(frames, Box::pin(sink)))
        }
        .boxed()
    }
}
