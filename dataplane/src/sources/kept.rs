//! The snapshot kept in `--state-dir`, so a restart serves it while the operator is away. It
//! holds upstream credentials and decides what this data plane serves, so the directory is
//! `0700`, the file `0600`, and a kept file or directory that other users can write is refused
//! at start-up: they could read the keys or hand the data plane a snapshot of their own.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use llmgate_snapshot::{Snapshot, SnapshotContent};

const STATE_FILE: &str = "snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot prepare the state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} can be written by other users (mode {mode:03o}) and holds credentials; \
         run `chmod {fix} {path}` or remove it"
    )]
    Writable {
        path: String,
        mode: u32,
        fix: &'static str,
    },
}

/// The state directory, checked and made private.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
}

/// Group or others may write.
const SHARED_WRITE: u32 = 0o022;

impl StateDir {
    /// Creates the directory (`0700`) or makes an existing one private, and refuses a kept
    /// file that others can write.
    pub fn open(dir: PathBuf) -> Result<StateDir, StateDirError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StateDirError::Io { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let mode = std::fs::metadata(&dir)
            .map_err(io(&dir))?
            .permissions()
            .mode()
            & 0o777;
        if mode != 0o700
            && std::fs::set_permissions(&dir, Permissions::from_mode(0o700)).is_err()
            && mode & SHARED_WRITE != 0
        {
            return Err(StateDirError::Writable {
                path: dir.display().to_string(),
                mode,
                fix: "700",
            });
        }
        let file = dir.join(STATE_FILE);
        match std::fs::symlink_metadata(&file) {
            Ok(m) if m.permissions().mode() & SHARED_WRITE != 0 || m.file_type().is_symlink() => {
                Err(StateDirError::Writable {
                    path: file.display().to_string(),
                    mode: m.permissions().mode() & 0o777,
                    fix: "600",
                })
            }
            Ok(_) => Ok(StateDir { dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateDir { dir }),
            Err(e) => Err(io(&file)(e)),
        }
    }

    /// The snapshot kept by the last run, if there is one and it is intact.
    pub fn restore(&self) -> Option<Snapshot> {
        let path = self.dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) if verified(&s) => Some(s),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "kept snapshot does not match its version; ignoring it");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "kept snapshot is unreadable; ignoring it");
                None
            }
        }
    }

    /// Writes the snapshot (`0600`) next to the old one and renames it over: a crash never
    /// leaves half a file. Blocking: call it off the async workers.
    pub fn keep(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        // A leftover from a crash keeps its old mode: start from a new file.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(STATE_FILE))
    }
}

/// Whether the snapshot's version is the hash of its content (not cut short or edited).
pub fn verified(s: &Snapshot) -> bool {
    let content = SnapshotContent {
        endpoints: s.endpoints.clone(),
        api_keys: s.api_keys.clone(),
        policies: s.policies.clone(),
        rate_limits: s.rate_limits.clone(),
        budgets: s.budgets.clone(),
        identity_providers: s.identity_providers.clone(),
        gateway_tokens: s.gateway_tokens.clone(),
    };
    Snapshot::new(content).version == s.version
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn the_state_is_private_and_a_shared_kept_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/state");
        let state = StateDir::open(dir.clone()).expect("new state dir");
        assert_eq!(mode(&dir), 0o700);
        state.keep(b"{}").expect("keep");
        assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);

        // An existing directory open to others is made private.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).expect("chmod");
        StateDir::open(dir.clone()).expect("reopened");
        assert_eq!(mode(&dir), 0o700);

        // A kept file others can write is refused, with the fix in the message.
        std::fs::set_permissions(dir.join(STATE_FILE), Permissions::from_mode(0o666))
            .expect("chmod");
        let e = StateDir::open(dir.clone()).expect_err("shared file");
        let text = e.to_string();
        assert!(
            text.contains("mode 666") && text.contains("chmod 600"),
            "{text}"
        );
    }
}
