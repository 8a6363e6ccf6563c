//! The operator's authority: its keys on disk, the JWTs and server configuration they make,
//! and the realm's roles in the log.
//!
//! On disk (`<data dir>/auth`, every seed 0600): the operator key, the system account and
//! its user, and per realm an account key, one scoped signing key per role and the revoked
//! user keys. Everything else — the operator, account and user JWTs, the nats-server
//! `operator` / `resolver` settings — is made from these by [`murmur_subjects::credentials`]
//! with the permissions [`murmur_subjects::roles`] derives, so a new murmur version with new
//! subjects regenerates the templates at its next start.
//!
//! In the log: the realm is claimed by its owner (`role.claimed`), who grants and revokes
//! roles (`role.granted`, `role.revoked`); see [`murmur_subjects::grants`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use murmur_subjects::connect::{Auth, ConnectOptions};
use murmur_subjects::credentials::{self, RoleKey};
use murmur_subjects::events::{RealmClaimed, RoleGranted, RoleRevoked};
use murmur_subjects::grants::RoleBook;
use murmur_subjects::log::Expected;
use murmur_subjects::roles::{self, ResourceNames, Role};
use murmur_subjects::{Draft, EventLog, Identity, LogConfig, Token};
use nkeys::KeyPair;

/// Writes `contents` to `path` readable by its owner only (created with the directory).
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(contents.as_bytes())?;
        // An existing file keeps its mode on open: set it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn load_or_create_key(path: &Path, new: fn() -> KeyPair) -> Result<KeyPair> {
    if path.exists() {
        let seed =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return KeyPair::from_seed(seed.trim())
            .with_context(|| format!("{} is not an nkey seed", path.display()));
    }
    let key = new();
    write_secret(path, &key.seed().context("seed")?)?;
    Ok(key)
}

fn load_key(path: &Path) -> Result<KeyPair> {
    let seed =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    KeyPair::from_seed(seed.trim())
        .with_context(|| format!("{} is not an nkey seed", path.display()))
}

/// The operator's keys in one directory.
pub struct Authority {
    dir: PathBuf,
    operator: KeyPair,
    system: KeyPair,
    system_user: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("operator", &self.operator.public_key())
            .finish_non_exhaustive()
    }
}

/// The keys of one realm's account.
pub struct RealmKeys {
    account: KeyPair,
    roles: BTreeMap<Role, KeyPair>,
    revocations: BTreeMap<String, i64>,
}

impl RealmKeys {
    /// The account's public key.
    pub fn account(&self) -> String {
        self.account.public_key()
    }
}

impl Authority {
    /// The authority kept in `dir`, created there (operator and system account keys) on
    /// first use.
    pub fn open_or_create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            operator: load_or_create_key(&dir.join("operator.nk"), KeyPair::new_operator)?,
            system: load_or_create_key(&dir.join("system.nk"), KeyPair::new_account)?,
            system_user: load_or_create_key(&dir.join("system-user.nk"), KeyPair::new_user)?,
            dir: dir.to_path_buf(),
        })
    }

    /// The authority kept in `dir`, which must exist: the operator's commands run where
    /// `murmur up` made it.
    pub fn open(dir: &Path) -> Result<Self> {
        let operator = dir.join("operator.nk");
        if !operator.exists() {
            bail!(
                "no operator keys in {}: run this where `murmur up` keeps its data (its --data-dir), as the operator",
                dir.display()
            );
        }
        Ok(Self {
            operator: load_key(&operator)?,
            system: load_key(&dir.join("system.nk"))?,
            system_user: load_key(&dir.join("system-user.nk"))?,
            dir: dir.to_path_buf(),
        })
    }

    /// The operator's public key.
    pub fn operator_key(&self) -> String {
        self.operator.public_key()
    }

    fn realm_dir(&self, realm: &Token) -> PathBuf {
        self.dir.join("realms").join(realm.as_str())
    }

    /// The realms with an account here.
    pub fn realms(&self) -> Result<Vec<Token>> {
        let mut out = Vec::new();
        let dir = self.dir.join("realms");
        if !dir.exists() {
            return Ok(out);
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && entry.path().join("account.nk").exists()
                && let Ok(token) = Token::new(name)
            {
                out.push(token);
            }
        }
        out.sort();
        Ok(out)
    }

    /// `realm`'s account keys, created on first use (an account key and a signing key
    /// per role).
    pub fn realm_keys(&self, realm: &Token) -> Result<RealmKeys> {
        let dir = self.realm_dir(realm);
        let account = load_or_create_key(&dir.join("account.nk"), KeyPair::new_account)?;
        let mut roles = BTreeMap::new();
        for role in Role::ALL {
            let key = load_or_create_key(
                &dir.join("roles").join(format!("{}.nk", role.as_str())),
                KeyPair::new_account,
            )?;
            roles.insert(role, key);
        }
        let revocations_path = dir.join("revocations.json");
        let revocations = if revocations_path.exists() {
            serde_json::from_str(&std::fs::read_to_string(&revocations_path)?)
                .with_context(|| format!("parsing {}", revocations_path.display()))?
        } else {
            BTreeMap::new()
        };
        Ok(RealmKeys {
            account,
            roles,
            revocations,
        })
    }

    /// The operator JWT (naming the system account).
    pub fn operator_jwt(&self) -> Result<String> {
        Ok(credentials::operator_jwt(
            &self.operator,
            "murmur",
            &self.system.public_key(),
        )?)
    }

    /// The system account's JWT.
    pub fn system_jwt(&self) -> Result<String> {
        Ok(credentials::account_jwt(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            false,
            &[],
            &BTreeMap::new(),
        )?)
    }

    /// `realm`'s account JWT: JetStream, one scoped signing key per role carrying the
    /// role's permissions for the streams in `log`, and the revoked keys.
    pub fn account_jwt(&self, realm: &Token, log: &LogConfig) -> Result<String> {
        let keys = self.realm_keys(realm)?;
        let names = ResourceNames::for_streams(&log.history_stream, &log.dlq_stream);
        let role_keys: Vec<RoleKey> = keys
            .roles
            .iter()
            .map(|(role, key)| RoleKey {
                role: *role,
                key: key.public_key(),
                permissions: roles::permissions(*role, realm, &names),
            })
            .collect();
        Ok(credentials::account_jwt(
            &self.operator,
            &keys.account(),
            realm.as_str(),
            true,
            &role_keys,
            &keys.revocations,
        )?)
    }

    /// The nats-server settings of operator mode: the operator JWT (written next to the
    /// keys), the system account, a full resolver keeping account JWTs in `resolver_dir`
    /// (so revocations pushed at run time survive a restart; the server creates it) and
    /// preloaded with the system account and every realm's account as this version derives
    /// them.
    pub fn server_config(&self, log: &LogConfig, resolver_dir: &Path) -> Result<String> {
        let operator_path = self.dir.join("operator.jwt");
        std::fs::write(&operator_path, self.operator_jwt()?)?;
        let mut preload = vec![(self.system.public_key(), self.system_jwt()?)];
        for realm in self.realms()? {
            preload.push((
                self.realm_keys(&realm)?.account(),
                self.account_jwt(&realm, log)?,
            ));
        }
        let preload: Vec<String> = preload
            .into_iter()
            .map(|(key, jwt)| format!("  {key}: \"{jwt}\""))
            .collect();
        Ok(format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: {{\n  type: full\n  dir: \"{}\"\n  allow_delete: false\n  interval: \"2m\"\n}}\nresolver_preload: {{\n{}\n}}\n",
            operator_path.display(),
            self.system.public_key(),
            resolver_dir.display(),
            preload.join("\n")
        ))
    }

    /// Writes the public files of operator mode into `dir`: `operator.jwt`, and
    /// `jwt/<account>.jwt` for the system account and every realm's account (what a full
    /// resolver reads from its directory). Returns the system account's public key.
    pub fn write_server_files(&self, dir: &Path, log: &LogConfig) -> Result<String> {
        let jwt_dir = dir.join("jwt");
        std::fs::create_dir_all(&jwt_dir)?;
        std::fs::write(dir.join("operator.jwt"), self.operator_jwt()?)?;
        std::fs::write(
            jwt_dir.join(format!("{}.jwt", self.system.public_key())),
            self.system_jwt()?,
        )?;
        for realm in self.realms()? {
            std::fs::write(
                jwt_dir.join(format!("{}.jwt", self.realm_keys(&realm)?.account())),
                self.account_jwt(&realm, log)?,
            )?;
        }
        Ok(self.system.public_key())
    }

    /// A user JWT for participant `key` with `role` in `realm`, named `name`.
    pub fn user_jwt(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
        key: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let keys = self.realm_keys(realm)?;
        let signer = keys.roles.get(&role).context("role signing key")?;
        Ok(credentials::user_jwt(
            signer,
            &keys.account(),
            key,
            name,
            role,
            expires_at,
        )?)
    }

    /// A `.creds` file's text for `identity` with `role` in `realm`.
    pub fn creds(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
        identity: &Identity,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let jwt = self.user_jwt(realm, role, name, identity.public_key(), expires_at)?;
        Ok(credentials::creds_text(&jwt, identity.seed()))
    }

    /// The system account user's `.creds` text (it pushes account updates).
    pub fn system_creds(&self) -> Result<String> {
        let jwt = credentials::plain_user_jwt(
            &self.system,
            &self.system_user.public_key(),
            "murmur-system",
        )?;
        Ok(credentials::creds_text(
            &jwt,
            &self.system_user.seed().context("seed")?,
        ))
    }

    /// Records `key` as revoked in `realm` (JWTs for it issued until now are refused once
    /// the account JWT reaches the server: [`push_account_jwt`]).
    pub fn revoke(&self, realm: &Token, key: &str) -> Result<()> {
        murmur_subjects::identity::check_public_key(key)?;
        let mut keys = self.realm_keys(realm)?;
        keys.revocations
            .insert(key.to_string(), Utc::now().timestamp());
        let path = self.realm_dir(realm).join("revocations.json");
        write_secret(&path, &serde_json::to_string_pretty(&keys.revocations)?)?;
        Ok(())
    }

    /// Writes the system user's creds into the authority's directory and returns their path.
    pub fn system_creds_file(&self) -> Result<PathBuf> {
        let path = self.dir.join("system-user.creds");
        write_secret(&path, &self.system_creds()?)?;
        Ok(path)
    }
}

/// Who opens realms and enrols participants on one server: the operator's authority (none
/// when the server enforces nothing), the realms' owner identity, and where the
/// credentials it issues are written. What `murmur demo` and the test kit use to run every
/// participant with its own key, role and credentials, as a deployment does.
pub struct Issuer {
    authority: Option<Authority>,
    servers: Vec<String>,
    owner: Identity,
    creds_dir: PathBuf,
    log: LogConfig,
    codec: murmur_subjects::EventCodec,
    /// Whether every enrolment is granted in the log, or only the roles whose decisions
    /// folds check ([`Role::decides`]).
    grant_all: bool,
    opened: tokio::sync::Mutex<BTreeMap<String, EventLog>>,
    claimed: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("servers", &self.servers)
            .field("secure", &self.authority.is_some())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer for `servers`; `authority` `None`: they enforce nothing (then only the
    /// log's grants are written).
    pub fn new(
        authority: Option<Authority>,
        servers: Vec<String>,
        owner: Identity,
        creds_dir: &Path,
        log: LogConfig,
        codec: murmur_subjects::EventCodec,
    ) -> Self {
        Self {
            authority,
            servers,
            owner,
            creds_dir: creds_dir.to_path_buf(),
            log,
            codec,
            grant_all: true,
            opened: Default::default(),
            claimed: Default::default(),
        }
    }

    /// Records in the log only the grants folds need (the roles that decide), not every
    /// enrolment: for tests that read the log whole and expect only their own events.
    pub fn grant_deciding_roles_only(mut self) -> Self {
        self.grant_all = false;
        self
    }

    /// Whether the servers enforce roles.
    pub fn is_secure(&self) -> bool {
        self.authority.is_some()
    }

    /// The servers.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The realms' owner.
    pub fn owner(&self) -> &Identity {
        &self.owner
    }

    /// The operator's keys, when the servers enforce roles.
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// Writes `identity`'s credentials for `role` in `realm` under the issuer's directory
    /// and returns their path; `None` when the servers enforce nothing.
    pub fn creds_file(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
        identity: &Identity,
    ) -> Result<Option<PathBuf>> {
        let Some(authority) = &self.authority else {
            return Ok(None);
        };
        let path = self.creds_dir.join(format!(
            "{realm}-{name}-{}.creds",
            &identity.public_key()[..12]
        ));
        write_secret(&path, &authority.creds(realm, role, name, identity, None)?)?;
        Ok(Some(path))
    }

    /// Connection options for the servers with `creds` (none: anonymous).
    pub fn connect_options(&self, creds: Option<&Path>) -> ConnectOptions {
        ConnectOptions {
            servers: self.servers.clone(),
            auth: creds.map_or(Auth::None, |p| Auth::CredsFile {
                path: p.to_path_buf(),
            }),
            ..Default::default()
        }
    }

    /// Opens `realm` on the servers (once): its account reaches the servers' resolver and
    /// its streams and buckets are created. Returns the owner's log (operator credentials;
    /// the realm is claimed in the log by [`Issuer::owner_log`]).
    pub async fn open_realm(&self, realm: &Token) -> Result<EventLog> {
        let mut opened = self.opened.lock().await;
        if let Some(log) = opened.get(realm.as_str()) {
            return Ok(log.clone());
        }
        if let Some(authority) = &self.authority {
            let jwt = authority.account_jwt(realm, &self.log)?;
            push_account_jwt(&self.servers, &authority.system_creds_file()?, &jwt).await?;
        }
        let creds = self.creds_file(realm, Role::Operator, "owner", &self.owner)?;
        let client = self
            .connect_options(creds.as_deref())
            .name("murmur-owner")
            .connect()
            .await?;
        let log = EventLog::options(self.owner.clone(), realm.clone())
            .config(self.log.clone())
            .codec(self.codec.clone())
            .open(client)
            .await?;
        log.provision().await?;
        opened.insert(realm.as_str().to_string(), log.clone());
        Ok(log)
    }

    /// The owner's log of `realm`, opened and claimed in the log (once).
    pub async fn owner_log(&self, realm: &Token) -> Result<EventLog> {
        let log = self.open_realm(realm).await?;
        let mut claimed = self.claimed.lock().await;
        if claimed.insert(realm.as_str().to_string()) {
            claim_realm(&log, "owner", &[]).await?;
        }
        Ok(log)
    }

    /// The realm's owner log (operator credentials), also granted `roles` in the log: what
    /// runs a realm's services in one process, as `murmur up` does.
    pub async fn platform(&self, realm: &Token, roles: &[Role]) -> Result<EventLog> {
        let owner = self.owner_log(realm).await?;
        claim_realm(&owner, "owner", roles).await?;
        Ok(owner)
    }

    /// Enrols a fresh identity as `name` with `role` in `realm` for a `murmur` process and
    /// returns the arguments that make the process that participant: `--creds FILE` where
    /// the servers enforce roles, else `--identity SEED_FILE` (written under `dir`).
    pub async fn process_args(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
        dir: &Path,
    ) -> Result<Vec<String>> {
        let (identity, creds) = self.enrol(realm, role, name).await?;
        Ok(match creds {
            Some(path) => vec!["--creds".into(), path.display().to_string()],
            None => {
                let path = dir.join(format!("{name}-{}.seed", &identity.public_key()[..12]));
                write_secret(&path, identity.seed())?;
                vec!["--identity".into(), path.display().to_string()]
            }
        })
    }

    /// Enrols `identity` as `name` with `role` in `realm`: its credentials (secure servers)
    /// and its grant in the log. Returns the credentials' path.
    pub async fn enrol_as(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
        identity: &Identity,
    ) -> Result<Option<PathBuf>> {
        let owner = self.open_realm(realm).await?;
        let creds = self.creds_file(realm, role, name, identity)?;
        if self.grant_all || role.decides() {
            let owner = self.owner_log(realm).await.map(|_| owner)?;
            grant(&owner, identity.public_key(), role, name, None).await?;
        }
        Ok(creds)
    }

    /// Enrols a fresh identity ([`Issuer::enrol_as`]).
    pub async fn enrol(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
    ) -> Result<(Identity, Option<PathBuf>)> {
        let identity = Identity::generate();
        let creds = self.enrol_as(realm, role, name, &identity).await?;
        Ok((identity, creds))
    }

    /// A participant with a fresh identity enrolled with `role`, connected with its
    /// credentials, its event log open.
    pub async fn participant(&self, realm: &Token, role: Role, name: &str) -> Result<EventLog> {
        let (identity, creds) = self.enrol(realm, role, name).await?;
        let client = self
            .connect_options(creds.as_deref())
            .name(name)
            .connect()
            .await?;
        Ok(EventLog::options(identity, realm.clone())
            .config(self.log.clone())
            .codec(self.codec.clone())
            .open(client)
            .await?)
    }
}

/// Sends an account JWT to the servers' resolver as the system user (`$SYS.REQ.CLAIMS.UPDATE`),
/// so a new realm's account or a revocation takes effect at once; a revoked user connected
/// now is disconnected.
pub async fn push_account_jwt(servers: &[String], system_creds: &Path, jwt: &str) -> Result<()> {
    let client = ConnectOptions {
        servers: servers.to_vec(),
        auth: Auth::CredsFile {
            path: system_creds.to_path_buf(),
        },
        ..Default::default()
    }
    .name("murmur-operator")
    .connect()
    .await?;
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request("$SYS.REQ.CLAIMS.UPDATE", jwt.to_string().into()),
    )
    .await
    .context("the server's resolver did not answer the account update within 10 s")??;
    let answer: serde_json::Value =
        serde_json::from_slice(&reply.payload).context("account update reply")?;
    let code = answer["data"]["code"]
        .as_i64()
        .or_else(|| answer["error"]["code"].as_i64())
        .unwrap_or(0);
    if code != 200 {
        bail!(
            "the server refused the account update: {}",
            String::from_utf8_lossy(&reply.payload)
        );
    }
    client.flush().await.ok();
    Ok(())
}

/// The realm's grants as the log holds them now.
pub async fn roles_now(log: &EventLog) -> Result<RoleBook> {
    let mut book = RoleBook::default();
    murmur_subjects::projection::read_roles(log, &mut book, None).await?;
    Ok(book)
}

/// Makes `log`'s identity the realm's owner when nobody has claimed it (`role.claimed`,
/// written so that only the first claim can be stored), and grants it `roles` it does not
/// hold yet. A realm claimed by another key is fine when this identity was granted the
/// operator role; otherwise it fails with who owns it.
pub async fn claim_realm(log: &EventLog, name: &str, roles: &[Role]) -> Result<()> {
    let me = log.identity().public_key().to_string();
    let mut book = roles_now(log).await?;
    let owner = book
        .realm(log.realm().as_str())
        .and_then(|r| r.owner.clone());
    match owner {
        None => {
            let claim = Draft::new(
                Token::new(me.as_str())?,
                &RealmClaimed { name: name.into() },
            )?;
            match log.append_expected(claim, Expected::NoEvents).await {
                Ok(_) | Err(murmur_subjects::LogError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            book = roles_now(log).await?;
        }
        Some(owner) if owner.key == me => {}
        Some(_) => {}
    }
    let held = book.roles_at(log.realm().as_str(), &me, u64::MAX, Some(Utc::now()));
    if !held.contains(Role::Operator) {
        let owner = book
            .realm(log.realm().as_str())
            .and_then(|r| r.owner.clone())
            .map(|o| format!("{} ({})", o.key, o.name))
            .unwrap_or_default();
        bail!(
            "realm {} is owned by {owner}, and this identity ({me}) is not one of its operators: run with the owner's identity, or have the owner grant this key the operator role (`murmur roles grant {me} --role operator`)",
            log.realm()
        );
    }
    for role in roles {
        if !held.contains(*role) {
            grant(log, &me, *role, name, None).await?;
        }
    }
    Ok(())
}

/// Grants `key` `role` in the log (signed by `log`'s identity, which must be the realm's
/// owner or an operator for the grant to count).
pub async fn grant(
    log: &EventLog,
    key: &str,
    role: Role,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<u64> {
    murmur_subjects::identity::check_public_key(key)?;
    let (_, appended) = log
        .append(Draft::new(
            Token::new(key)?,
            &RoleGranted {
                role,
                name: name.to_string(),
                expires_at,
            },
        )?)
        .await?;
    Ok(appended.sequence)
}

/// Revokes `key`'s `role` (every role when `None`) in the log.
pub async fn revoke(log: &EventLog, key: &str, role: Option<Role>, reason: &str) -> Result<u64> {
    murmur_subjects::identity::check_public_key(key)?;
    let (_, appended) = log
        .append(Draft::new(
            Token::new(key)?,
            &RoleRevoked {
                role,
                reason: reason.to_string(),
            },
        )?)
        .await?;
    Ok(appended.sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_and_kept_private() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let a = Authority::open_or_create(dir.path())?;
        let b = Authority::open(dir.path())?;
        assert_eq!(a.operator_key(), b.operator_key());
        let realm = Token::new("acme")?;
        let first = a.realm_keys(&realm)?.account();
        assert_eq!(b.realm_keys(&realm)?.account(), first);
        assert_eq!(a.realms()?, vec![realm.clone()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("operator.nk"))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let config = a.server_config(&LogConfig::default(), &dir.path().join("jwt"))?;
        assert!(config.contains("type: full"), "{config}");
        assert!(config.contains(&first), "{config}");
        let missing = Authority::open(&dir.path().join("elsewhere")).expect_err("no keys");
        assert!(missing.to_string().contains("murmur up"), "{missing}");
        Ok(())
    }
}
