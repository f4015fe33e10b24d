//! The agent's state on disk: its enrollment and its last-known-good policy
//! (with the user's session and the services' states, which a restart
//! restores), each written atomically (temporary file, fsync, rename, fsync of the folder),
//! so a crash or power loss leaves either the old file or the new one.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::machine::HeldPolicy;

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not what the agent wrote (truncated, edited, another format).
    #[error("{path} is damaged ({detail}); remove it to start over")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The last-known-good policy's file name.
const POLICY: &str = "policy.json";

/// The file of the services the hooks started.
const STARTED: &str = "services.json";

#[derive(Serialize, Deserialize)]
struct StartedServices {
    running: BTreeSet<String>,
}

/// This device's enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The server it enrolled with.
    pub server: String,
    /// The tenant's id.
    pub tenant: String,
    /// The device's id.
    pub device_id: String,
    /// The device's bearer token.
    pub device_token: String,
}

/// The agent's folder on disk.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Uses (and creates) a folder, readable only by its owner.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(root).map_err(|source| StateError::Io {
            path: root.to_owned(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The enrollment, if the device has enrolled.
    pub fn enrollment(&self) -> Result<Option<Enrollment>, StateError> {
        self.read("enrollment.json")
    }

    /// Saves the enrollment.
    pub fn save_enrollment(&self, enrollment: &Enrollment) -> Result<(), StateError> {
        self.write("enrollment.json", enrollment)
    }

    /// The last-known-good policy, if any, with when it was received.
    pub fn policy(&self) -> Result<Option<HeldPolicy>, StateError> {
        let Some(mut held) = self.read::<HeldPolicy>(POLICY)? else {
            return Ok(None);
        };
        if held.received_at_ms.is_none() {
            // Files written before the time was recorded: the file was written
            // when the policy was received, so its modification time says when.
            held.received_at_ms = fs::metadata(self.root.join(POLICY))
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|since| u64::try_from(since.as_millis()).ok());
        }
        Ok(Some(held))
    }

    /// Saves the last-known-good policy.
    pub fn save_policy(&self, held: &HeldPolicy) -> Result<(), StateError> {
        self.write(POLICY, held)
    }

    /// Removes the last-known-good policy (a revoked device must not run from it).
    pub fn forget_policy(&self) -> Result<(), StateError> {
        let path = self.root.join(POLICY);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// The services whose start hook succeeded and that were not stopped
    /// since: a restart does not start them again. A damaged or missing file
    /// reads as none, so their start hooks run again.
    pub fn started_services(&self) -> BTreeSet<String> {
        self.read::<StartedServices>(STARTED)
            .ok()
            .flatten()
            .map(|file| file.running)
            .unwrap_or_default()
    }

    /// Saves the services whose start hook succeeded.
    pub fn save_started_services(&self, running: &BTreeSet<String>) -> Result<(), StateError> {
        self.write(
            STARTED,
            &StartedServices {
                running: running.clone(),
            },
        )
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.root.join(name);
        let temporary = self.root.join(format!(".{name}.tmp"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // The files hold the device token.
            options.mode(0o600);
        }
        let mut file = options.open(&temporary).map_err(io(&temporary))?;
        file.write_all(&bytes).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        fs::rename(&temporary, &path).map_err(io(&path))?;
        // The rename is durable once the folder itself is synced.
        if let Ok(folder) = File::open(&self.root) {
            let _ = folder.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Policy;
    use std::collections::BTreeMap;

    fn policy(version: i64) -> Policy {
        Policy {
            etag: "\"e\"".into(),
            config_version: version,
            poll_interval_s: 60,
            tenant: "t".into(),
            device_id: "d".into(),
            services: BTreeMap::new(),
        }
    }

    #[test]
    fn saves_and_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(&dir.path().join("agent")).expect("open");
        assert_eq!(state.policy().expect("read"), None);
        state.save_policy(&held(3)).expect("saved");
        state.save_policy(&held(4)).expect("saved again");
        assert_eq!(state.policy().expect("read"), Some(held(4)));
        let text = fs::read_to_string(state.path().join(POLICY)).expect("read");
        assert!(
            text.contains("\"received_at\": \"2023-11-14T22:13:20.5Z\""),
            "{text}"
        );
        let enrollment = Enrollment {
            server: "http://x".into(),
            tenant: "t".into(),
            device_id: "d".into(),
            device_token: "secret".into(),
        };
        state.save_enrollment(&enrollment).expect("saved");
        assert_eq!(state.enrollment().expect("read"), Some(enrollment));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(state.path().join("enrollment.json"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the token");
        }
    }

    fn held(version: i64) -> HeldPolicy {
        HeldPolicy {
            policy: policy(version),
            received_at_ms: Some(1_700_000_000_500),
            session_state: None,
        }
    }

    #[test]
    fn a_file_without_the_reception_time_reads_with_its_modification_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        // What agents wrote before the time was recorded: the bare policy.
        let old = serde_json::to_vec(&policy(7)).expect("json");
        fs::write(dir.path().join(POLICY), old).expect("write");
        let modified = fs::metadata(dir.path().join(POLICY))
            .and_then(|m| m.modified())
            .expect("mtime")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        let read = state.policy().expect("read").expect("held");
        assert_eq!(read.policy, policy(7));
        assert_eq!(read.received_at_ms, Some(modified));
        assert_eq!(
            read.session_state, None,
            "the agent decides what that means"
        );
    }

    #[test]
    fn the_session_state_is_saved_with_the_policy() {
        use crate::machine::{ServiceState, Session, SessionState};
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        let signed_out = HeldPolicy {
            session_state: Some(SessionState {
                session: Session::LoggedOut,
                services: BTreeMap::from([("zpa".to_owned(), ServiceState::PendingLogin)]),
            }),
            ..held(2)
        };
        state.save_policy(&signed_out).expect("saved");
        assert_eq!(state.policy().expect("read"), Some(signed_out));
        let text = fs::read_to_string(state.path().join(POLICY)).expect("read");
        assert!(text.contains("\"session\": \"logged_out\""), "{text}");
        assert!(text.contains("\"zpa\": \"pending_login\""), "{text}");
    }

    #[test]
    fn started_services_survive_and_a_damaged_file_reads_as_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        assert!(state.started_services().is_empty());
        let running = BTreeSet::from(["private_access".to_owned()]);
        state.save_started_services(&running).expect("saved");
        assert_eq!(state.started_services(), running);
        fs::write(dir.path().join(STARTED), b"{\"runn").expect("write");
        assert!(state.started_services().is_empty());
    }

    #[test]
    fn a_forgotten_policy_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        state.forget_policy().expect("nothing to forget is fine");
        state.save_policy(&held(1)).expect("saved");
        state.forget_policy().expect("forgotten");
        assert_eq!(state.policy().expect("read"), None);
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path()).expect("open");
        fs::write(dir.path().join(POLICY), b"{\"etag\": \"trunc").expect("write");
        let error = state.policy().expect_err("damaged");
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
