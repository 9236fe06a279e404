//! The node's files under its data directory: the identity key (created on first run, mode
//! 0600) and the peers snapshot (address book and bans), written atomically. A corrupt file
//! is reported and moved aside, never silently dropped or overwritten.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use silver_p2p_core::{Keypair, KEY_LEN};

/// Why the node's files could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The operating system gave no randomness for a new key.
    #[error("no OS randomness for a new key: {0}")]
    Entropy(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fresh OS entropy (adapters seed the core's generators with it).
pub fn os_seed() -> Result<[u8; 32], FilesError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| FilesError::Entropy(e.to_string()))?;
    Ok(seed)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync the directory. Readers see the old or the new file, never
/// a torn one. `private` makes the file readable by its owner only (unix).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Moves a corrupt file aside (`<name>.corrupt-<n>`) and returns where it went.
fn quarantine(path: &Path) -> Result<PathBuf, FilesError> {
    for n in 0u32.. {
        let aside = path.with_extension(format!("corrupt-{n}"));
        if !aside.exists() {
            fs::rename(path, &aside).map_err(io_err(path))?;
            return Ok(aside);
        }
    }
    unreachable!("some suffix is free")
}

/// Loads the key at `path` (64 hex characters), or creates one there from OS entropy. A
/// corrupt key file is moved aside (and reported) before a new key is made.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, FilesError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mut key = [0u8; KEY_LEN];
            let t = text.trim();
            if t.len() == KEY_LEN * 2 && decode_hex(t, &mut key) {
                return Ok(Keypair::from_private_key(key));
            }
            let aside = quarantine(path)?;
            tracing::error!(
                "key file {} is corrupt; moved to {} and creating a new identity",
                path.display(),
                aside.display()
            );
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let key = Keypair::from_private_key(os_seed()?);
    let mut text = String::with_capacity(KEY_LEN * 2 + 1);
    for b in key.private_key() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    write_atomic(path, text.as_bytes(), true).map_err(io_err(path))?;
    Ok(key)
}

fn decode_hex(s: &str, out: &mut [u8]) -> bool {
    let b = s.as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16);
        let lo = (b[2 * i + 1] as char).to_digit(16);
        match (hi, lo) {
            (Some(h), Some(l)) => *o = (h * 16 + l) as u8,
            _ => return false,
        }
    }
    true
}

/// The node's data directory.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// Uses (and creates) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Files, FilesError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Files { dir })
    }

    /// Path of the identity key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("node.key")
    }

    /// Path of the peers snapshot (address book and bans).
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join("peers.cbor")
    }

    /// The identity key, created on first run.
    pub fn key(&self) -> Result<Keypair, FilesError> {
        load_or_create_key(&self.key_path())
    }

    /// The identity key in `dir` if one exists and is valid; never creates or moves
    /// anything (for tools that only read, like `silver-node id`).
    pub fn read_key(dir: &Path) -> Result<Option<Keypair>, FilesError> {
        let path = dir.join("node.key");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut key = [0u8; KEY_LEN];
                let t = text.trim();
                if t.len() == KEY_LEN * 2 && decode_hex(t, &mut key) {
                    Ok(Some(Keypair::from_private_key(key)))
                } else {
                    Ok(None)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The saved snapshot, if any. `validate` checks it (the node's `restore`); a snapshot it
    /// rejects is moved aside and reported, and `None` is returned.
    pub fn load_snapshot<E: std::fmt::Display>(
        &self,
        validate: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<(), FilesError> {
        let path = self.snapshot_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if let Err(e) = validate(&bytes) {
            let aside = quarantine(&path)?;
            tracing::error!(
                "peers snapshot {} is corrupt ({e}); moved to {}",
                path.display(),
                aside.display()
            );
        }
        Ok(())
    }

    /// Saves the snapshot atomically.
    pub fn save_snapshot(&self, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.snapshot_path(), bytes, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory that does not exist yet (`Files::open` creates it), inside a
    /// guard that removes it when the test ends.
    fn tempdir(name: &str) -> (tempfile::TempDir, PathBuf) {
        let guard = tempfile::Builder::new()
            .prefix(&format!("silver-files-{name}-"))
            .tempdir()
            .unwrap();
        let dir = guard.path().join("data");
        (guard, dir)
    }

    #[test]
    fn key_is_created_once_private_and_reloaded() {
        let (_guard, dir) = tempdir("key");
        let f = Files::open(dir).unwrap();
        let a = f.key().unwrap();
        let b = f.key().unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(f.key_path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_files_are_moved_aside_not_overwritten() {
        let (_guard, dir) = tempdir("corrupt");
        let f = Files::open(&dir).unwrap();
        fs::write(f.key_path(), "not a key").unwrap();
        let _ = f.key().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("node.corrupt-0")).unwrap(),
            "not a key"
        );
        fs::write(f.snapshot_path(), b"junk").unwrap();
        f.load_snapshot(|_| Err("bad")).unwrap();
        assert!(!f.snapshot_path().exists());
        assert_eq!(fs::read(dir.join("peers.corrupt-0")).unwrap(), b"junk");
        f.save_snapshot(b"good").unwrap();
        assert_eq!(fs::read(f.snapshot_path()).unwrap(), b"good");
    }
}
