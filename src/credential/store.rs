//! The token store: for each issuer and client, one JSON file under
//! `~/.config/mesh-authz/tokens/` holding the refresh token, the last token handed out
//! and its expiry. Like ssh with its keys, it refuses files other users can open or
//! that belong to someone else, and writes by rename so a reader never sees half a file.

use super::CredentialError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest token file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What is kept for one issuer and client.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The issuer.
    pub issuer: String,
    /// The client.
    pub client_id: String,
    /// Who signed in (from the ID token, for messages only).
    pub user: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// The last token handed out.
    pub token: Option<String>,
    /// When it expires, seconds since the epoch.
    pub expires: Option<u64>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("user", &self.user)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<set>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("expires", &self.expires)
            .finish()
    }
}

/// The store in one directory.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

/// An exclusive lock on one issuer and client's file, held while refreshing, so two git
/// processes do not spend one rotating refresh token twice. Released on drop.
pub struct StoreLock {
    _file: std::fs::File,
}

impl TokenStore {
    /// The store in `dir` (created on first save, mode 0700).
    pub fn new(dir: PathBuf) -> Self {
        TokenStore { dir }
    }

    /// The file of `issuer` and `client_id`: a digest of both, so any issuer URL makes
    /// a plain file name.
    pub fn path(&self, issuer: &str, client_id: &str) -> PathBuf {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{issuer}\n{client_id}").as_bytes(),
        );
        let name: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{name}.json"))
    }

    /// What is stored for `issuer` and `client_id`, if anything.
    pub fn load(&self, issuer: &str, client_id: &str) -> Result<Option<Stored>, CredentialError> {
        let path = self.path(issuer, client_id);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_error(&path, e)),
        };
        let meta = file.metadata().map_err(|e| store_error(&path, e))?;
        check_private(&path, &meta)?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(CredentialError::Store {
                path,
                reason: "not a token file (not a regular file, or too large)".into(),
            });
        }
        let stored: Stored =
            serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
                CredentialError::Store {
                    path: path.clone(),
                    reason: format!("not a token file: {e}"),
                }
            })?;
        // A file copied from another issuer's name is not this issuer's sign-in.
        if stored.issuer != issuer || stored.client_id != client_id {
            return Ok(None);
        }
        Ok(Some(stored))
    }

    /// Saves `stored` (mode 0600, replacing the file at once).
    pub fn save(&self, stored: &Stored) -> Result<(), CredentialError> {
        self.ensure_dir()?;
        let path = self.path(&stored.issuer, &stored.client_id);
        let temp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&temp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            store_error(&path, e)
        })
    }

    /// Forgets `issuer` and `client_id`'s sign-in.
    pub fn remove(&self, issuer: &str, client_id: &str) -> Result<bool, CredentialError> {
        let path = self.path(issuer, client_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_error(&path, e)),
        }
    }

    /// Locks `issuer` and `client_id` against other processes refreshing, waiting for
    /// one that does.
    pub fn lock(&self, issuer: &str, client_id: &str) -> Result<StoreLock, CredentialError> {
        self.ensure_dir()?;
        let path = self.path(issuer, client_id).with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| store_error(&path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| store_error(&path, e.into()))?;
        Ok(StoreLock { _file: file })
    }

    /// Creates the directory (0700) or checks the one there.
    fn ensure_dir(&self) -> Result<(), CredentialError> {
        match std::fs::metadata(&self.dir) {
            Ok(meta) => check_private(&self.dir, &meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(|e| store_error(&self.dir, e))?;
                // `recursive` leaves existing parents alone; the token directory itself
                // gets 0700 whatever the umask.
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| store_error(&self.dir, e))
            }
            Err(e) => Err(store_error(&self.dir, e)),
        }
    }
}

/// Owned by this user, and no access for group or others.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), CredentialError> {
    if meta.uid() != rustix::process::getuid().as_raw() {
        return Err(CredentialError::NotOwner(path.to_path_buf()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn store_error(path: &Path, e: std::io::Error) -> CredentialError {
    CredentialError::Store {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            issuer: "https://idp.example.com".into(),
            client_id: "cli".into(),
            user: Some("alice".into()),
            refresh_token: Some("the-refresh-token".into()),
            token: Some("the-token".into()),
            expires: Some(1_900_000_000),
        }
    }

    #[test]
    fn what_is_saved_loads_back_from_a_private_file_in_a_private_directory() {
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path().join("mesh-authz/tokens"));
        assert_eq!(store.load("https://idp.example.com", "cli").unwrap(), None);
        store.save(&stored()).unwrap();
        let path = store.path("https://idp.example.com", "cli");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home.path().join("mesh-authz/tokens")), 0o700);
        assert_eq!(
            store.load("https://idp.example.com", "cli").unwrap(),
            Some(stored())
        );
        // Another client of the same issuer is another sign-in.
        assert_eq!(
            store.load("https://idp.example.com", "other").unwrap(),
            None
        );
        assert!(store.remove("https://idp.example.com", "cli").unwrap());
        assert_eq!(store.load("https://idp.example.com", "cli").unwrap(), None);
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path().join("tokens"));
        store.save(&stored()).unwrap();
        let path = store.path("https://idp.example.com", "cli");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = store.load("https://idp.example.com", "cli").unwrap_err();
        assert!(
            matches!(e, CredentialError::TooOpen { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn an_open_token_directory_is_refused_before_writing() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("tokens");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let store = TokenStore::new(dir);
        assert!(matches!(
            store.save(&stored()),
            Err(CredentialError::TooOpen { .. })
        ));
    }

    #[test]
    fn garbage_in_the_file_is_an_error_naming_the_file_not_a_panic() {
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path().join("tokens"));
        store.save(&stored()).unwrap();
        let path = store.path("https://idp.example.com", "cli");
        std::fs::write(&path, b"\xff{not json").unwrap();
        let e = store.load("https://idp.example.com", "cli").unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let shown = format!("{:?}", stored());
        assert!(!shown.contains("the-refresh-token") && !shown.contains("the-token\""));
        assert!(shown.contains("alice"));
    }

    #[test]
    fn the_lock_is_exclusive_across_holders() {
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path().join("tokens"));
        let first = store.lock("i", "c").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = store.clone();
        let waiter = std::thread::spawn(move || {
            let _second = other.lock("i", "c").unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
