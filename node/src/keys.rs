//! `keygen` and `id`: the node's identity key in its data directory (`node.key`, 64 hex
//! characters, mode 0600), managed by the driver's [`Files`].

use std::path::Path;

use silver_p2p_core::{Keypair, PeerId, KEY_LEN};
use silver_p2p_driver::Files;

use crate::CliError;

/// Creates the key in `dir` if absent and prints the peer id on stdout (whether the key is
/// new or existed goes to stderr).
pub fn keygen(dir: &Path) -> Result<(), CliError> {
    let files = Files::open(dir).map_err(|e| CliError::failure(e.to_string()))?;
    let path = files.key_path();
    let existed = path.exists();
    let key = files.key().map_err(|e| CliError::failure(e.to_string()))?;
    if existed && read_key(&path).is_ok() {
        eprintln!("key exists: {}", path.display());
    } else {
        eprintln!("created key: {}", path.display());
    }
    println!("{}", key.peer_id());
    Ok(())
}

/// Prints the peer id of the key in `dir`; an error if there is none or it is unreadable.
/// Never creates or moves a key (unlike [`Files::key`]).
pub fn id(dir: &Path) -> Result<(), CliError> {
    // `Files::open` creates the directory: only use it (for the key's file name) when the
    // directory exists, so `id` never leaves anything behind.
    let path = match dir.is_dir() {
        true => Files::open(dir)
            .map(|f| f.key_path())
            .map_err(|e| CliError::failure(e.to_string()))?,
        false => dir.join("node.key"),
    };
    let id = read_key(&path).map_err(CliError::failure)?;
    println!("{id}");
    Ok(())
}

/// Reads the key file at `path` without creating or moving anything.
pub fn read_key(path: &Path) -> Result<PeerId, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no key at {} (create one with `silver-node keygen --data-dir {}`)",
                path.display(),
                path.parent().unwrap_or(Path::new(".")).display()
            )
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|e| {
        format!(
            "{}: not a key ({KEY_LEN} bytes as {} hex characters): {e}",
            path.display(),
            KEY_LEN * 2
        )
    })?;
    Ok(Keypair::from_private_key(key).peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_key_agrees_with_the_driver_and_reports_problems() {
        let tmp = tempfile::tempdir().unwrap();
        let files = Files::open(tmp.path().join("data")).unwrap();
        assert!(read_key(&files.key_path())
            .unwrap_err()
            .contains("no key at"));
        let key = files.key().unwrap();
        assert_eq!(read_key(&files.key_path()).unwrap(), key.peer_id());
        std::fs::write(files.key_path(), "zz").unwrap();
        assert!(read_key(&files.key_path())
            .unwrap_err()
            .contains("not a key"));
    }
}
