//! Files replaced whole and made durable: the one way Feiyun renames a file into place.
//!
//! A rename is durable only once the directory holding the new name is synced; without that,
//! a power cut after "success" can leave the old file, or none, behind — for a generated
//! master key that means the next start makes a new key over data sealed with the old one.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably: a temporary file beside it is written and
/// synced, renamed over `path`, and the directory is synced. `private` makes the file
/// readable by its owner only (keys, credentials).
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("a file path has no file name"))?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Syncs a directory, so the names created or renamed in it survive a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        write_file(&p, b"one", true).unwrap();
        write_file(&p, b"two", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("key.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
