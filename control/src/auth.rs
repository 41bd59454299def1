//! API authentication and authorisation: bearer tokens with roles.
//!
//! Tokens live in `tokens.yaml` in the server's data directory, created with an admin token on
//! first start, readable by its owner only. Roles: `admin` (everything), `operator` (deploy:
//! apps, services, routes, scale, rollback), `viewer` (read, no secret data), and `node` (an
//! agent: read, the data of `tls` secrets only, and change only its own node and the status of
//! instances placed on it); see [`SecretAccess`]. Tokens are looked up by their SHA-256
//! digest, so no comparison leaks timing about a token's bytes, and are never logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Deploy: declare, scale, roll back and delete apps, services and routes; read all.
    Operator,
    /// Read.
    Viewer,
    /// An agent: read (of secrets, only `tls` ones in full); its own node; the status of its
    /// instances.
    Node,
}

/// The label that lets agents read an opaque secret (`"true"`): keys the data plane needs on
/// every node, such as the key that signs sticky-session cookies.
pub const DATA_PLANE_LABEL: &str = "berth.io/data-plane";

/// How much of a secret's data a role may read. Kubernetes' node authorizer lets a kubelet read
/// the secrets of the pods on its node; berth's ingress proxy runs on every node and needs the
/// certificate of every route, so node tokens read every `tls` secret, and no opaque data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretAccess {
    /// Every secret's data (admin, operator).
    All,
    /// The data of `tls` secrets; opaque secrets are listed and watched with their values
    /// redacted, and a GET of one by name is refused (node).
    TlsOnly,
    /// No data: values are replaced by their length (viewer).
    None,
}

impl SecretAccess {
    /// What `role` may read.
    pub fn of(role: Role) -> SecretAccess {
        match role {
            Role::Admin | Role::Operator => SecretAccess::All,
            Role::Node => SecretAccess::TlsOnly,
            Role::Viewer => SecretAccess::None,
        }
    }

    /// Whether `obj` must be shown redacted under this access.
    pub fn hides(self, obj: &crate::api::Object) -> bool {
        match (self, obj) {
            (SecretAccess::All, _) => false,
            (SecretAccess::TlsOnly, crate::api::Object::Secret(s)) => {
                s.kind != crate::api::SecretType::Tls
                    && s.metadata.labels.get(DATA_PLANE_LABEL).map(String::as_str) != Some("true")
            }
            (SecretAccess::None, crate::api::Object::Secret(_)) => true,
            _ => false,
        }
    }

    /// `obj` as a holder of this access sees it.
    pub fn view(self, obj: &crate::api::Object) -> crate::api::Object {
        if self.hides(obj) {
            obj.redacted()
        } else {
            obj.clone()
        }
    }
}

/// One token in the token file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (shown in logs and errors, never the token).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For `node` tokens: the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The secret.
    pub token: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its node, for node tokens.
    pub node: Option<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 32 bytes from the OS, hex.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The tokens the API server accepts.
pub struct Auth {
    path: PathBuf,
    by_digest: RwLock<HashMap<[u8; 32], Identity>>,
    entries: Mutex<Vec<TokenEntry>>,
}

impl Auth {
    /// Loads `<dir>/tokens.yaml`, creating it with an admin token if it does not exist.
    pub fn open(dir: &Path) -> Result<Auth> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("tokens.yaml");
        let entries = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let file: TokenFile = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not a token file", path.display()))?;
            file.tokens
        } else {
            let entries = vec![TokenEntry {
                name: "admin".into(),
                role: Role::Admin,
                node: None,
                token: new_token()?,
            }];
            write_file(&path, &entries)?;
            tracing::info!(path = %path.display(), "created the token file with an admin token");
            entries
        };
        let auth = Auth {
            path,
            by_digest: RwLock::new(HashMap::new()),
            entries: Mutex::new(Vec::new()),
        };
        for e in entries {
            auth.insert(e)?;
        }
        Ok(auth)
    }

    /// Where the token file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn insert(&self, e: TokenEntry) -> Result<()> {
        if e.token.len() < 16 {
            bail!(
                "{}: token {:?} is shorter than 16 characters",
                self.path.display(),
                e.name
            );
        }
        if (e.role == Role::Node) != e.node.is_some() {
            bail!(
                "{}: token {:?}: a node token names its node, and only a node token does",
                self.path.display(),
                e.name
            );
        }
        let id = Identity {
            name: e.name.clone(),
            role: e.role,
            node: e.node.clone(),
        };
        self.by_digest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest(&e.token), id);
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
        Ok(())
    }

    /// The token of the first entry with this role (and node), if any: for `berth dev`, which
    /// hands its own CLI and agent their tokens.
    pub fn token_for(&self, role: Role, node: Option<&str>) -> Option<String> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| e.role == role && e.node.as_deref() == node)
            .map(|e| e.token.clone())
    }

    /// Creates and persists a token; returns the secret.
    pub fn create(&self, name: &str, role: Role, node: Option<&str>) -> Result<String> {
        let token = new_token()?;
        let entry = TokenEntry {
            name: name.to_owned(),
            role,
            node: node.map(str::to_owned),
            token: token.clone(),
        };
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.iter().any(|e| e.name == name) {
                bail!("a token named {name:?} exists already");
            }
            let mut all = entries.clone();
            all.push(entry.clone());
            write_file(&self.path, &all)?;
        }
        self.insert(entry)?;
        Ok(token)
    }

    /// The caller of a request with this `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, String> {
        let Some(value) = header else {
            return Err(
                "no bearer token: pass --token, set BERTH_TOKEN, or use a config file \
                        (the admin token is in the server's tokens.yaml)"
                    .to_owned(),
            );
        };
        let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
            return Err("the Authorization header must be `Bearer <token>`".to_owned());
        };
        self.by_digest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest(token))
            .cloned()
            .ok_or_else(|| "unknown token".to_owned())
    }
}

/// Writes the token file atomically (temporary file, fsync, rename), readable by its owner only.
fn write_file(path: &Path, entries: &[TokenEntry]) -> Result<()> {
    let text = format!(
        "# berth API tokens: anyone with one of these can use the API with its role. Keep secret.\n{}",
        serde_yaml_ng::to_string(&TokenFile {
            tokens: entries.to_vec()
        })?
    );
    crate::fsutil::write_private(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(dir.path()).unwrap();
        let admin = auth.token_for(Role::Admin, None).unwrap();
        assert_eq!(admin.len(), 64);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(auth.path()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let node = auth.create("node-a", Role::Node, Some("a")).unwrap();
        assert!(
            auth.create("node-a", Role::Node, Some("a")).is_err(),
            "names are unique"
        );
        let again = Auth::open(dir.path()).unwrap();
        assert_eq!(
            again
                .authenticate(Some(&format!("Bearer {admin}")))
                .unwrap()
                .role,
            Role::Admin
        );
        let id = again.authenticate(Some(&format!("Bearer {node}"))).unwrap();
        assert_eq!((id.role, id.node.as_deref()), (Role::Node, Some("a")));
        assert_eq!(
            again.authenticate(Some("Bearer nope")).unwrap_err(),
            "unknown token"
        );
        assert!(
            again
                .authenticate(None)
                .unwrap_err()
                .starts_with("no bearer token")
        );
        assert!(
            again
                .authenticate(Some(&admin))
                .unwrap_err()
                .contains("must be `Bearer")
        );
    }
}
