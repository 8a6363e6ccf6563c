//! The realm and its roles: claimed, a role granted, a role revoked.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::roles::Role;
use crate::subject::{Domain, Plane};

/// `dev.murmur.role.claimed`: an identity claims ownership of the realm. The first claim in
/// the log wins (written with an expected-last-sequence of nothing on the realm's claims);
/// the owner signs role grants and revocations, and holds the operator role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RealmClaimed {
    /// Who claims it, for people reading the log.
    pub name: String,
}

impl Payload for RealmClaimed {
    const TYPE: &'static str = "dev.murmur.role.claimed";
    const DOMAIN: Domain = Domain::Role;
    const VERB: &'static str = "claimed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "an identity claims the realm (the first claim wins): it owns the roles";
    const EMITTED_BY: &'static [Role] = &[];
    const OWN_AGGREGATE: bool = true;
}

/// `dev.murmur.role.granted`: the realm's owner (or an operator) grants a participant key a
/// role, from this event's position in the log until revoked or `expires_at`. The
/// aggregate is the participant's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleGranted {
    /// The role granted.
    pub role: Role,
    /// A name for the participant (the credentials' name).
    pub name: String,
    /// When the grant ends, if it does (its credentials expire then too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Payload for RoleGranted {
    const TYPE: &'static str = "dev.murmur.role.granted";
    const DOMAIN: Domain = Domain::Role;
    const VERB: &'static str = "granted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the realm's owner or an operator granted a key a role";
    const EMITTED_BY: &'static [Role] = &[];
}

/// `dev.murmur.role.revoked`: the realm's owner (or an operator) revokes a participant's
/// role (every role it holds when `role` is `None`) from this event's position on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleRevoked {
    /// The role revoked; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Why, for people reading the log.
    pub reason: String,
}

impl Payload for RoleRevoked {
    const TYPE: &'static str = "dev.murmur.role.revoked";
    const DOMAIN: Domain = Domain::Role;
    const VERB: &'static str = "revoked";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the realm's owner or an operator revoked a key's role";
    const EMITTED_BY: &'static [Role] = &[];
}
