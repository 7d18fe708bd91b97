//! The daemon's runtime directory: `$XDG_RUNTIME_DIR/shim-hv/`, or `/run/shim-hv/`
//! where that variable is unset (or not an absolute path, as the XDG base directory
//! spec says to ignore it then).
//!
//! ```text
//!  shim-hv/            mode 0700, owned by the daemon's user
//!    control.sock      the toolstack's control socket (0600)
//!    xenstored.sock    dom0's xenstore connection (0600; XENSTORED_PATH)
//!    daemon.lock       held (flock) by the running daemon: only one runs
//!    daemon.pid        its pid
//!    daemon.log        what it logs
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where one shim-hv daemon keeps its sockets, lock, pid and log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeDir {
    dir: PathBuf,
}

impl RuntimeDir {
    /// The directory the environment names: `$XDG_RUNTIME_DIR/shim-hv`, else
    /// `/run/shim-hv`.
    pub fn from_env() -> RuntimeDir {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        match base {
            Some(b) => RuntimeDir {
                dir: b.join("shim-hv"),
            },
            None => RuntimeDir {
                dir: PathBuf::from("/run/shim-hv"),
            },
        }
    }

    /// A runtime directory at `dir` (the demo and tests use private ones).
    pub fn at(dir: impl Into<PathBuf>) -> RuntimeDir {
        RuntimeDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// dom0's xenstore socket (`XENSTORED_PATH`).
    pub fn xenstored_socket(&self) -> PathBuf {
        self.dir.join("xenstored.sock")
    }

    /// The lock file the running daemon holds.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    /// The daemon's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("daemon.pid")
    }

    /// The daemon's log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The pid the pid file names, if it names one.
    pub fn daemon_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates the directory (mode 0700) if missing. An existing one must be a
    /// directory owned by this user; group and other permissions are removed from
    /// it. Anything else is refused: the sockets inside rely on it.
    pub fn create(&self) -> io::Result<()> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(&self.dir)?;
            }
            Err(e) => return Err(e),
        }
        let m = fs::symlink_metadata(&self.dir)?;
        let me = nix::unistd::geteuid().as_raw();
        if !m.is_dir() {
            return Err(io::Error::other(format!(
                "{}: not a directory",
                self.dir.display()
            )));
        }
        if m.uid() != me {
            return Err(io::Error::other(format!(
                "{}: owned by uid {}, not by uid {me}",
                self.dir.display(),
                m.uid()
            )));
        }
        if m.mode() & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let r = RuntimeDir::at("/x/shim-hv");
        assert_eq!(r.control_socket(), Path::new("/x/shim-hv/control.sock"));
        assert_eq!(r.xenstored_socket(), Path::new("/x/shim-hv/xenstored.sock"));
        assert_eq!(r.lock_file(), Path::new("/x/shim-hv/daemon.lock"));
    }

    #[test]
    fn create_tightens_mode() {
        let base = std::env::temp_dir().join(format!("shim-hv-rt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let r = RuntimeDir::at(base.join("a/shim-hv"));
        r.create().unwrap();
        assert_eq!(fs::metadata(r.path()).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(r.path(), fs::Permissions::from_mode(0o755)).unwrap();
        r.create().unwrap();
        assert_eq!(fs::metadata(r.path()).unwrap().mode() & 0o777, 0o700);
        fs::write(base.join("file"), b"").unwrap();
        assert!(RuntimeDir::at(base.join("file")).create().is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
