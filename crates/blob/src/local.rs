//! Blobs as files on a local filesystem.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crc_fast::{CrcAlgorithm, Digest};

use crate::cold::{COLD_MAGIC, ColdReader, ColdWriter};
use crate::{
    BlobError, BlobId, BlobReader, BlobStore, BlobWriter, FRAME_SIZE, HEADER_LEN, MAGIC, MAX_READ,
};

const CRC_LEN: u64 = 4;

pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// Creates the 256 shard directories (fsynced) under `root`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root)?;
        for shard in 0..=255u8 {
            let dir = root.join(format!("{shard:02x}"));
            if !dir.exists() {
                std::fs::create_dir(&dir)?;
            }
        }
        fsync_dir(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn path(&self, id: BlobId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Size on disk of a blob whose payload is `len` bytes.
    pub fn file_len(len: u64) -> u64 {
        HEADER_LEN + len + frames(len) * CRC_LEN
    }
}

impl BlobStore for LocalBlobStore {
    type Writer = LocalBlobWriter;
    type Reader = LocalBlobReader;

    fn create(&self, id: BlobId) -> Result<LocalBlobWriter, BlobError> {
        let path = self.path(id);
        let file = create_new(&path)?;
        let mut out = BufWriter::with_capacity(1024 * 1024, file);
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&(FRAME_SIZE as u32).to_le_bytes());
        out.write_all(&header)?;
        Ok(LocalBlobWriter(Writer::Plain(PlainWriter {
            out,
            path,
            frame: Vec::with_capacity(FRAME_SIZE),
            frame_index: 0,
            len: 0,
        })))
    }

    fn create_cold(&self, id: BlobId) -> Result<LocalBlobWriter, BlobError> {
        let path = self.path(id);
        let file = create_new(&path)?;
        Ok(LocalBlobWriter(Writer::Cold(Box::new(ColdWriter::new(
            file, path,
        )?))))
    }

    fn open(&self, id: BlobId, len: u64) -> Result<LocalBlobReader, BlobError> {
        let file = match File::open(self.path(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(id));
            }
            Err(e) => return Err(e.into()),
        };
        let mut magic = [0u8; 8];
        if file.read_exact_at(&mut magic, 0).is_ok() && &magic == COLD_MAGIC {
            return Ok(LocalBlobReader(Reader::Cold(Box::new(ColdReader::open(
                id, file, len,
            )?))));
        }
        let on_disk = file.metadata()?.len();
        if on_disk != LocalBlobStore::file_len(len) {
            return Err(BlobError::Corrupt {
                id,
                reason: format!(
                    "file is {on_disk} bytes, expected {}",
                    LocalBlobStore::file_len(len)
                ),
            });
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC || header[8..12] != (FRAME_SIZE as u32).to_le_bytes() {
            return Err(BlobError::Corrupt {
                id,
                reason: "bad header".into(),
            });
        }
        Ok(LocalBlobReader(Reader::Plain(PlainReader {
            id,
            file,
            len,
            buf: Vec::new(),
        })))
    }

    fn exists(&self, id: BlobId) -> Result<bool, BlobError> {
        Ok(self.path(id).try_exists()?)
    }

    fn delete(&self, id: BlobId) -> Result<(), BlobError> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A blob being written, in the standard or the cold (compressed) format.
pub struct LocalBlobWriter(Writer);

enum Writer {
    Plain(PlainWriter),
    Cold(Box<ColdWriter>),
}

struct PlainWriter {
    out: BufWriter<File>,
    path: PathBuf,
    frame: Vec<u8>,
    frame_index: u64,
    len: u64,
}

impl PlainWriter {
    fn seal_frame(&mut self) -> Result<(), BlobError> {
        let crc = frame_crc(self.frame_index, &self.frame);
        self.out.write_all(&self.frame)?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.frame.clear();
        self.frame_index += 1;
        Ok(())
    }
}

impl BlobWriter for LocalBlobWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        match &mut self.0 {
            Writer::Plain(w) => w.write(data),
            Writer::Cold(w) => w.write(data),
        }
    }

    fn len(&self) -> u64 {
        match &self.0 {
            Writer::Plain(w) => w.len,
            Writer::Cold(w) => w.len(),
        }
    }

    fn finish(self) -> Result<u64, BlobError> {
        match self.0 {
            Writer::Plain(w) => w.finish(),
            Writer::Cold(w) => w.finish(),
        }
    }
}

impl PlainWriter {
    fn write(&mut self, mut data: &[u8]) -> Result<(), BlobError> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = FRAME_SIZE - self.frame.len();
            let n = room.min(data.len());
            self.frame.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.frame.len() == FRAME_SIZE {
                self.seal_frame()?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64, BlobError> {
        if !self.frame.is_empty() {
            self.seal_frame()?;
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            fsync_dir(dir)?;
        }
        Ok(self.len)
    }
}

/// A verified reader of either format (told apart by the header magic).
pub struct LocalBlobReader(Reader);

enum Reader {
    Plain(PlainReader),
    Cold(Box<ColdReader>),
}

impl BlobReader for LocalBlobReader {
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError> {
        match &mut self.0 {
            Reader::Plain(r) => r.read(offset, len),
            Reader::Cold(r) => r.read(offset, len),
        }
    }
}

struct PlainReader {
    id: BlobId,
    file: File,
    len: u64,
    buf: Vec<u8>,
}

impl PlainReader {
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError> {
        let Some(end) = read_end(self.id, self.len, offset, len)? else {
            return Ok(Vec::new());
        };
        let frame = FRAME_SIZE as u64;
        let first = offset / frame;
        let last = (end - 1) / frame;
        let payload_start = first * frame;
        let payload_end = ((last + 1) * frame).min(self.len);
        let disk_start = HEADER_LEN + first * (frame + CRC_LEN);
        let disk_len = (payload_end - payload_start) + (last - first + 1) * CRC_LEN;
        self.buf.resize(disk_len as usize, 0);
        self.file.read_exact_at(&mut self.buf, disk_start)?;
        let mut out = Vec::with_capacity(len);
        let mut pos = 0usize;
        for i in first..=last {
            let plen = (frame.min(self.len - i * frame)) as usize;
            let payload = &self.buf[pos..pos + plen];
            let stored = u32::from_le_bytes(
                self.buf[pos + plen..pos + plen + 4]
                    .try_into()
                    .map_err(|_| BlobError::OutOfRange(self.id))?,
            );
            if frame_crc(i, payload) != stored {
                return Err(BlobError::Corrupt {
                    id: self.id,
                    reason: format!("frame {i} failed its checksum"),
                });
            }
            let from = if i == first {
                (offset - i * frame) as usize
            } else {
                0
            };
            let to = if i == last {
                (end - i * frame) as usize
            } else {
                plen
            };
            out.extend_from_slice(&payload[from..to]);
            pos += plen + CRC_LEN as usize;
        }
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }
}

/// Where a read of `len` bytes at `offset` ends, after the checks both formats share;
/// `None` for an empty read.
pub(crate) fn read_end(
    id: BlobId,
    blob_len: u64,
    offset: u64,
    len: usize,
) -> Result<Option<u64>, BlobError> {
    if len > MAX_READ {
        return Err(BlobError::ReadTooLarge(len));
    }
    let end = offset
        .checked_add(len as u64)
        .filter(|e| *e <= blob_len)
        .ok_or(BlobError::OutOfRange(id))?;
    Ok((len != 0).then_some(end))
}

fn frames(len: u64) -> u64 {
    len.div_ceil(FRAME_SIZE as u64)
}

pub(crate) fn frame_crc(index: u64, payload: &[u8]) -> u32 {
    let mut d = Digest::new(CrcAlgorithm::Crc32Iscsi);
    d.update(&index.to_le_bytes());
    d.update(payload);
    d.finalize() as u32
}

pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn write_blob(store: &LocalBlobStore, data: &[u8], chunk: usize) -> BlobId {
        write_as(store, data, chunk, false)
    }

    fn write_as(store: &LocalBlobStore, data: &[u8], chunk: usize, cold: bool) -> BlobId {
        let id = BlobId::random();
        let mut w = if cold {
            store.create_cold(id).unwrap()
        } else {
            store.create(id).unwrap()
        };
        for c in data.chunks(chunk.max(1)) {
            w.write(c).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        id
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_range_reads_back(len in 0usize..300_000, chunk in 1usize..100_000, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), cold in any::<bool>(), noisy in 0usize..300_000) {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalBlobStore::open(dir.path()).unwrap();
            // A compressible pattern with an incompressible stretch, so cold blobs hold both
            // compressed and raw frames.
            let mut data = pattern(len);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for d in data.iter_mut().skip(noisy).take(100_000) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *d = x as u8;
            }
            let id = write_as(&store, &data, chunk, cold);
            let mut r = store.open(id, len as u64).unwrap();
            let (x, y) = if len == 0 { (0, 0) } else {
                let x = a.index(len); let y = b.index(len);
                (x.min(y), x.max(y) + 1)
            };
            let got = r.read(x as u64, y - x).unwrap();
            prop_assert_eq!(&got[..], &data[x..y]);
        }
    }

    #[test]
    fn flipped_byte_truncation_and_wrong_length_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let data = pattern(3 * FRAME_SIZE + 100);
        let id = write_blob(&store, &data, 10_000);
        let path = store.path(id);

        // Wrong expected length.
        assert!(matches!(
            store.open(id, data.len() as u64 + 1),
            Err(BlobError::Corrupt { .. })
        ));

        // A flipped byte in frame 2 fails reads that touch frame 2 only.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (HEADER_LEN as usize) + 2 * (FRAME_SIZE + 4) + 17;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut r = store.open(id, data.len() as u64).unwrap();
        assert_eq!(r.read(0, 100).unwrap(), &data[..100]);
        assert!(matches!(
            r.read(0, data.len()),
            Err(BlobError::Corrupt { .. })
        ));

        // Two frames swapped.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0x40;
        let f = FRAME_SIZE + 4;
        let h = HEADER_LEN as usize;
        let (a, b) = bytes[h..h + 2 * f].split_at_mut(f);
        a.swap_with_slice(b);
        std::fs::write(&path, &bytes).unwrap();
        let mut r = store.open(id, data.len() as u64).unwrap();
        assert!(r.read(0, 10).is_err());

        // Truncated file.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            store.open(id, data.len() as u64),
            Err(BlobError::Corrupt { .. })
        ));
    }

    #[test]
    fn cold_blobs_are_smaller_and_catch_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let data = pattern(5 * FRAME_SIZE + 7);
        let id = write_as(&store, &data, 70_000, true);
        let path = store.path(id);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.len() * 4 < data.len(),
            "{} bytes on disk",
            bytes.len()
        );
        let mut r = store.open(id, data.len() as u64).unwrap();
        assert_eq!(r.read(0, data.len()).unwrap(), data);
        assert_eq!(
            r.read(3 * FRAME_SIZE as u64 - 5, 10).unwrap(),
            &data[3 * FRAME_SIZE - 5..3 * FRAME_SIZE + 5]
        );
        assert!(matches!(
            store.open(id, data.len() as u64 - 1),
            Err(BlobError::Corrupt { .. })
        ));
        // Every single-byte flip is either refused on open or caught by the frames it hits;
        // none yields wrong bytes.
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            if let Ok(mut r) = store.open(id, data.len() as u64) {
                match r.read(0, data.len()) {
                    Ok(got) => assert_eq!(got, data, "flip at {at} returned wrong bytes"),
                    Err(e) => assert!(matches!(e, BlobError::Corrupt { .. }), "{e}"),
                }
            }
        }
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(store.open(id, data.len() as u64).is_err());
    }

    #[test]
    fn delete_is_idempotent_and_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let id = write_blob(&store, b"hello", 5);
        store.delete(id).unwrap();
        store.delete(id).unwrap();
        assert!(matches!(store.open(id, 5), Err(BlobError::NotFound(_))));
    }
}
