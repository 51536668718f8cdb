//! The blob engine: object data as files of checksummed frames, addressed by opaque ids.
//!
//! Architecture invariant: this crate never sees bucket names or object keys, only
//! [`BlobId`]s, so no client-controlled string ever becomes a filesystem path.
//!
//! File format (`blobs/<2 hex>/<32 hex>`):
//!
//! ```text
//! header  : "FYBLOB01" | frame_size: u32 LE | reserved: u32
//! frame i : payload (frame_size bytes, the last one shorter) | crc32c(i as u64 LE || payload): u32 LE
//! ```
//!
//! Cold blobs (`FYBLOBZ1`) compress each frame on its own; see `cold.rs`.
//!
//! Encrypted blobs (`FYBLOBS1`, and `FYBLOBZS` for cold ones) have the same layout with a
//! 16-byte AES-256-GCM tag in place of each crc32c; see `seal.rs`. Whether a blob is
//! encrypted is decided by its metadata record (the caller passes the key), never by the
//! magic, so a plaintext file swapped in for an encrypted one is refused.
//!
//! The frame index is inside each checksum, so swapped or repeated frames fail; the expected
//! length comes from the metadata record, so a truncated or extended file fails on open.
//! All calls here are blocking; callers run them off the async runtime.

mod cold;
mod local;
mod seal;

pub use local::{
    FileSink, LocalBlobReader, LocalBlobStore, LocalBlobWriter, framed_reader, framed_writer,
};
pub use seal::FrameKey;

use std::fmt;

/// Payload bytes per frame. 64 KiB keeps a small Range read cheap while checksum and
/// syscall overhead stay negligible for large streams.
pub const FRAME_SIZE: usize = 64 * 1024;
pub const HEADER_LEN: u64 = 16;
pub const MAGIC: &[u8; 8] = b"FYBLOB01";
pub const SEALED_MAGIC: &[u8; 8] = b"FYBLOBS1";
/// Largest single `read` a reader serves, so one call never allocates without bound.
pub const MAX_READ: usize = 16 * 1024 * 1024;

/// An opaque blob identifier (random 128 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub u128);

impl BlobId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(Self(u128::from_be_bytes(b.try_into().ok()?)))
    }
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.to_hex())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(BlobId),
    /// Checksum, length or header mismatch: the stored bytes are not what was written.
    #[error("blob {id} is corrupt: {reason}")]
    Corrupt { id: BlobId, reason: String },
    #[error("read of {0} bytes exceeds the per-call limit")]
    ReadTooLarge(usize),
    #[error("read beyond the end of blob {0}")]
    OutOfRange(BlobId),
    #[error("blob I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Too few of the nodes that keep copies could be reached (a multi-node region).
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
}

/// Where object data lives. The embedded default is [`LocalBlobStore`]; a cold tier on a
/// public-cloud bucket would be a second implementation.
pub trait BlobStore: Send + Sync + 'static {
    type Writer: BlobWriter;
    type Reader: BlobReader;

    /// Starts a new blob, encrypted under `key` when given (a key must never be used for
    /// a second blob). Nothing is durable until [`BlobWriter::finish`] returns.
    fn create(&self, id: BlobId, key: Option<&FrameKey>) -> Result<Self::Writer, BlobError>;
    /// Starts a blob of the local cold class: stored compressed frame by frame, read back
    /// through the same [`BlobStore::open`].
    fn create_cold(&self, id: BlobId, key: Option<&FrameKey>) -> Result<Self::Writer, BlobError>;
    /// Opens a blob whose payload is `len` bytes long (from the metadata record), with the
    /// key it was written under, if any.
    fn open(&self, id: BlobId, len: u64, key: Option<&FrameKey>)
    -> Result<Self::Reader, BlobError>;
    /// Removes a blob; a missing one is not an error (deletion is retried after crashes).
    fn delete(&self, id: BlobId) -> Result<(), BlobError>;
    fn exists(&self, id: BlobId) -> Result<bool, BlobError>;
}

pub trait BlobWriter: Send + 'static {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError>;
    /// Payload bytes written so far.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Flushes and fsyncs the file and its directory entry.
    fn finish(self) -> Result<u64, BlobError>;
}

pub trait BlobReader: Send + 'static {
    /// Reads and verifies payload bytes `[offset, offset + len)`.
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError>;
}

/// Where the stored bytes of a blob being written go: a local file, or the replicas of a
/// multi-node region. The frame encoder above it is the same for both, so a replica holds
/// exactly the bytes a local blob file would (and never needs the blob's key).
pub trait Sink: std::io::Write + Send + 'static {
    /// Makes every byte written durable; the blob exists only once this returns.
    fn commit(self: Box<Self>) -> Result<(), BlobError>;
}

/// Random access to the stored bytes of a blob, local or on another node. Readers verify
/// every frame they take from it, so a source is trusted for nothing.
pub trait Source: Send + 'static {
    /// The stored size in bytes.
    fn size(&self) -> std::io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}
