//! What a node reports about its disk: capacity and free space of the data directory's
//! file system, and how many blob files it holds.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalUsage {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// Capacity and space available to unprivileged writers, by `statvfs(3)`; zeros when the
/// call fails (the heartbeat still goes out).
// 64-bit Linux only: the statvfs fields are u64 there.
pub fn disk_usage(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by the call before it is read.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return (0, 0);
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let unit = st.f_frsize;
    (
        st.f_blocks.saturating_mul(unit),
        st.f_bavail.saturating_mul(unit),
    )
}

/// Files and bytes under `dir` to depth two (`blobs/<2 hex>/<file>`); what cannot be read
/// is skipped.
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let Ok(top) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in top.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files += 1;
            bytes = bytes.saturating_add(meta.len());
        } else if meta.is_dir() {
            let Ok(inner) = std::fs::read_dir(entry.path()) else {
                continue;
            };
            for f in inner.flatten() {
                if let Ok(m) = f.metadata()
                    && m.is_file()
                    && !f.file_name().to_string_lossy().ends_with(".tmp")
                {
                    files += 1;
                    bytes = bytes.saturating_add(m.len());
                }
            }
        }
    }
    (files, bytes)
}
