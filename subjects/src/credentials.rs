//! NATS decentralized authentication for murmur: the operator, account and user JWTs, and
//! `.creds` files, built from the role declarations.
//!
//! The claims are `nats-jwt-rs`'s (a port of the NATS `jwt` Go package); this module is the
//! glue: an operator with a system account; one account per realm with JetStream and one
//! *scoped* signing key per role, whose template carries that role's permissions
//! ([`crate::roles::permissions`]), so every user JWT is small and holds no permission of
//! its own; user JWTs whose subject is the participant's identity key, so the key a
//! participant connects with is the key it signs events with. Revocations live in the
//! account JWT.
//!
//! Pure: no I/O, apart from reading the clock when a JWT is signed (its `iat`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use nats_jwt_rs::Claims;
use nats_jwt_rs::account::{Account, JetStreamLimits};
use nats_jwt_rs::operator::Operator;
use nats_jwt_rs::types::{
    Limits, NatsLimits, Permission, ResponsePermission, ScopeType, SigningKey, UserScope,
};
use nats_jwt_rs::user::{User, UserPermissionLimits};
use nkeys::KeyPair;

use crate::roles::{Permissions, Role};

/// Why credentials could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A key is not the kind of nkey it must be.
    #[error("{what} is not a valid {kind} nkey: {reason}")]
    BadKey {
        /// Which key.
        what: &'static str,
        /// The nkey kind expected (operator, account, user).
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// A JWT could not be signed or decoded.
    #[error("JWT: {0}")]
    Jwt(String),
    /// The text is not a `.creds` file.
    #[error(
        "not a NATS credentials file: {0} (expected a user JWT block and a user nkey seed block)"
    )]
    Malformed(String),
    /// The seed in the file is not the key the JWT was issued to.
    #[error("the seed is for {seed_key}, but the JWT was issued to {jwt_key}")]
    Mismatch {
        /// The seed's public key.
        seed_key: String,
        /// The JWT's subject.
        jwt_key: String,
    },
    /// The JWT has expired.
    #[error(
        "the credentials of {name} ({key}) expired at {at}; ask the operator for new ones (`murmur creds issue`)"
    )]
    Expired {
        /// The user's name.
        name: String,
        /// Its key.
        key: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What a user JWT says (decoded, its signature checked against its issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    /// The user's name.
    pub name: String,
    /// The user's public key (the participant's identity key).
    pub key: String,
    /// The key that signed it (a role's scoped signing key).
    pub issuer: String,
    /// The account it belongs to.
    pub account: Option<String>,
    /// Its role, from its tags.
    pub role: Option<Role>,
    /// When it was signed.
    pub issued_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A `.creds` file: a user JWT and the seed of the key it was issued to.
#[derive(Clone)]
pub struct UserCredentials {
    /// The JWT.
    pub jwt: String,
    /// The nkey seed (`SU...`).
    pub seed: String,
    /// What the JWT says.
    pub claims: UserClaims,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

fn jwt_err(e: impl std::fmt::Display) -> CredentialsError {
    CredentialsError::Jwt(e.to_string())
}

fn unix(t: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(t, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

const ROLE_TAG: &str = "murmur-role:";

/// The operator JWT, self-signed, naming the system account.
pub fn operator_jwt(
    operator: &KeyPair,
    name: &str,
    system_account: &str,
) -> Result<String, CredentialsError> {
    let mut claims = Operator::new_claims(name.to_string(), operator.public_key());
    claims.nats.system_account = Some(system_account.to_string());
    claims.encode(operator).map_err(jwt_err)
}

/// One role's scoped signing key in an account.
#[derive(Debug, Clone)]
pub struct RoleKey {
    /// The role.
    pub role: Role,
    /// The signing key's public key (`A...`).
    pub key: String,
    /// What users signed with it may do.
    pub permissions: Permissions,
}

/// An account JWT signed by the operator: JetStream on (unlimited) when `jetstream`, one
/// scoped signing key per role with that role's permissions as its template, and the
/// revoked user keys (key → unix time: JWTs issued at or before it are refused).
pub fn account_jwt(
    operator: &KeyPair,
    account: &str,
    name: &str,
    jetstream: bool,
    role_keys: &[RoleKey],
    revocations: &BTreeMap<String, i64>,
) -> Result<String, CredentialsError> {
    let mut claims = Account::new_claims(name.to_string(), account.to_string());
    if jetstream && let Some(limits) = claims.nats.limits.as_mut() {
        limits.jetstream = Some(JetStreamLimits {
            memory_storage: Some(-1),
            disk_storage: Some(-1),
            streams: Some(-1),
            consumer: Some(-1),
            ..Default::default()
        });
    }
    if !role_keys.is_empty() {
        claims.nats.signing_keys = Some(
            role_keys
                .iter()
                .map(|rk| SigningKey {
                    key: rk.key.clone(),
                    scope: Some(UserScope {
                        kind: ScopeType::UserScope,
                        key: rk.key.clone(),
                        role: Some(rk.role.as_str().to_string()),
                        template: Some(template(&rk.permissions)),
                        description: Some(rk.role.description().to_string()),
                    }),
                })
                .collect(),
        );
    }
    if !revocations.is_empty() {
        claims.nats.revocations = Some(
            revocations
                .iter()
                .map(|(k, t)| (k.clone(), u64::try_from(*t).unwrap_or(0)))
                .collect(),
        );
    }
    claims.encode(operator).map_err(jwt_err)
}

fn template(p: &Permissions) -> UserPermissionLimits {
    let mut t = UserPermissionLimits::default();
    t.permissions.publish = Permission {
        allow: p.publish.iter().cloned().collect(),
        deny: Vec::new(),
    };
    t.permissions.subscribe = Permission {
        allow: p.subscribe.iter().cloned().collect(),
        deny: Vec::new(),
    };
    t.permissions.resp = p.responses.then_some(ResponsePermission {
        max_messages: 1,
        ttl: Duration::from_secs(crate::roles::RESPONSE_WINDOW_SECS),
    });
    t.limits = Some(Limits {
        user_limits: None,
        nats_limits: Some(NatsLimits {
            subs: Some(p.max_subscriptions.unwrap_or(-1)),
            data: Some(-1),
            payload: Some(p.max_payload.unwrap_or(-1)),
        }),
    });
    t
}

/// A user JWT for the participant key `user` named `name` with `role`, signed by that
/// role's scoped signing key in `account`, expiring at `expires_at` if given. The user's
/// own claims carry no permission or limit: a scoped key's users take the role's template,
/// and the server refuses a user JWT with any of its own.
pub fn user_jwt(
    role_key: &KeyPair,
    account: &str,
    user: &str,
    name: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
) -> Result<String, CredentialsError> {
    nkeys::from_public_key(user).map_err(|e| CredentialsError::BadKey {
        what: "the participant key",
        kind: "user",
        reason: e.to_string(),
    })?;
    let mut claims = User::new_claims(name.to_string(), user.to_string());
    claims.nats.issuer_account = Some(account.to_string());
    claims.nats.permissions.limits = None;
    claims.nats.generic_fields.tags = Some(vec![format!("{ROLE_TAG}{}", role.as_str())]);
    claims.exp = expires_at.map(|t| t.timestamp());
    claims.encode(role_key).map_err(jwt_err)
}

/// A user JWT signed by the account key itself, with every permission and no limit (the
/// system account's user, which pushes account updates). Unlike a scoped key's user it
/// must carry its limits: absent, they mean zero subscriptions and zero-byte payloads.
pub fn plain_user_jwt(
    account_key: &KeyPair,
    user: &str,
    name: &str,
) -> Result<String, CredentialsError> {
    let claims = User::new_claims(name.to_string(), user.to_string());
    claims.encode(account_key).map_err(jwt_err)
}

/// The text of a `.creds` file.
pub fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// Decodes a user JWT, checking its signature against its issuer.
pub fn decode_user_jwt(jwt: &str) -> Result<UserClaims, CredentialsError> {
    let claims = Claims::<User>::decode(jwt).map_err(jwt_err)?;
    let role = claims
        .nats
        .generic_fields
        .tags
        .iter()
        .flatten()
        .find_map(|t| t.strip_prefix(ROLE_TAG)?.parse().ok());
    Ok(UserClaims {
        name: claims.name.clone().unwrap_or_default(),
        key: claims.sub.clone(),
        issuer: claims.iss.clone(),
        account: claims.nats.issuer_account.clone(),
        role,
        issued_at: unix(i64::try_from(claims.iat).unwrap_or(0)),
        expires_at: claims.exp.map(unix),
    })
}

/// Reads a `.creds` file's text: both blocks present, the JWT's signature valid, the seed
/// the key the JWT names, and the JWT not expired at `now`.
pub fn parse_creds(text: &str, now: DateTime<Utc>) -> Result<UserCredentials, CredentialsError> {
    let block = |begin: &str| -> Result<String, CredentialsError> {
        let start = text
            .find(begin)
            .ok_or_else(|| CredentialsError::Malformed(format!("no {begin:?} line")))?;
        text[start + begin.len()..]
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with("---"))
            .map(str::to_string)
            .ok_or_else(|| CredentialsError::Malformed(format!("nothing after {begin:?}")))
    };
    let jwt = block("-----BEGIN NATS USER JWT-----")?;
    let seed = block("-----BEGIN USER NKEY SEED-----")?;
    let claims = decode_user_jwt(&jwt)?;
    let pair = KeyPair::from_seed(&seed).map_err(|e| CredentialsError::BadKey {
        what: "the seed",
        kind: "user",
        reason: e.to_string(),
    })?;
    if pair.public_key() != claims.key {
        return Err(CredentialsError::Mismatch {
            seed_key: pair.public_key(),
            jwt_key: claims.key,
        });
    }
    if let Some(at) = claims.expires_at
        && at <= now
    {
        return Err(CredentialsError::Expired {
            name: claims.name,
            key: claims.key,
            at,
        });
    }
    Ok(UserCredentials { jwt, seed, claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::{ResourceNames, permissions};
    use crate::subject::Token;

    fn payload(jwt: &str) -> serde_json::Value {
        use base64::Engine;
        let body = jwt.split('.').nth(1).expect("three parts");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn an_account_carries_one_scoped_key_per_role_with_its_permissions() {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let worker_key = KeyPair::new_account();
        let p = permissions(
            Role::Worker,
            &Token::new("acme").expect("token"),
            &ResourceNames::default(),
        );
        let jwt = account_jwt(
            &operator,
            &account.public_key(),
            "acme",
            true,
            &[RoleKey {
                role: Role::Worker,
                key: worker_key.public_key(),
                permissions: p.clone(),
            }],
            &[("UREVOKED".to_string(), 5)].into_iter().collect(),
        )
        .expect("account");
        let claims = payload(&jwt);
        assert_eq!(claims["iss"], operator.public_key());
        assert_eq!(claims["sub"], account.public_key());
        let nats = &claims["nats"];
        assert_eq!(nats["limits"]["disk_storage"], -1);
        let scope = &nats["signing_keys"][0];
        assert_eq!(scope["kind"], "user_scope");
        assert_eq!(scope["role"], "worker");
        assert_eq!(scope["key"], worker_key.public_key());
        let allowed: Vec<String> =
            serde_json::from_value(scope["template"]["pub"]["allow"].clone()).expect("list");
        assert_eq!(allowed, p.publish.iter().cloned().collect::<Vec<_>>());
        assert_eq!(scope["template"]["resp"]["max"], 1);
        // A reply window of its own, not the server's two minutes (nanoseconds in the JWT).
        assert_eq!(
            scope["template"]["resp"]["ttl"],
            crate::roles::RESPONSE_WINDOW_SECS * 1_000_000_000
        );
        // The role's limits travel in its template: a worker's subscriptions capped, its
        // payload the server's own.
        assert_eq!(scope["template"]["subs"], crate::roles::MAX_SUBSCRIPTIONS);
        assert_eq!(scope["template"]["payload"], -1);
        assert_eq!(nats["revocations"]["UREVOKED"], 5);
    }

    #[test]
    fn creds_round_trip_and_bad_ones_say_why() {
        let role_key = KeyPair::new_account();
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let expires = Utc
            .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        let jwt = user_jwt(
            &role_key,
            &account.public_key(),
            &user.public_key(),
            "w1",
            Role::Worker,
            Some(expires),
        )
        .expect("user");
        let claims = payload(&jwt);
        // A scoped key's user carries no permission or limit of its own.
        for own in ["pub", "sub", "subs", "data", "payload"] {
            assert!(
                claims["nats"]
                    .get(own)
                    .is_none_or(|v| v == &serde_json::json!({})),
                "{own}: {claims}"
            );
        }
        assert_eq!(claims["nats"]["issuer_account"], account.public_key());
        let text = creds_text(&jwt, &user.seed().expect("seed"));
        let now = Utc
            .with_ymd_and_hms(2029, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        let creds = parse_creds(&text, now).expect("parses");
        assert_eq!(creds.claims.key, user.public_key());
        assert_eq!(creds.claims.role, Some(Role::Worker));
        assert_eq!(creds.claims.name, "w1");
        assert_eq!(creds.claims.expires_at, Some(expires));
        let later = Utc
            .with_ymd_and_hms(2031, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        let expired = parse_creds(&text, later).expect_err("expired");
        assert!(
            expired.to_string().contains("expired at 2030-01-01"),
            "{expired}"
        );
        let other = KeyPair::new_user();
        let mismatched = creds_text(&jwt, &other.seed().expect("seed"));
        assert!(matches!(
            parse_creds(&mismatched, now),
            Err(CredentialsError::Mismatch { .. })
        ));
        assert!(matches!(
            parse_creds("hello", now),
            Err(CredentialsError::Malformed(_))
        ));
        let tampered = text.replace(&jwt[jwt.len() - 6..], "AAAAAA");
        assert!(parse_creds(&tampered, now).is_err());
    }
}
