//! Blobs as files on a local filesystem.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crc_fast::{CrcAlgorithm, Digest};

use crate::cold::{COLD_MAGIC, COLD_SEALED_MAGIC, ColdReader, ColdWriter};
use crate::seal::{FrameKey, Guard};
use crate::{
    BlobError, BlobId, BlobReader, BlobStore, BlobWriter, FRAME_SIZE, HEADER_LEN, MAGIC, MAX_READ,
    SEALED_MAGIC, Sink, Source,
};

pub struct LocalBlobStore {
    root: PathBuf,
}

/// Where copies being received are written before they take their blob's name.
const TMP_DIR: &str = "tmp";

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
        // Copies cut short by a crash: never named, so never read; cleared at start.
        let tmp = root.join(TMP_DIR);
        if tmp.exists() {
            for entry in std::fs::read_dir(&tmp)? {
                let _ = std::fs::remove_file(entry?.path());
            }
        } else {
            std::fs::create_dir(&tmp)?;
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

    /// Size on disk of a blob whose payload is `len` bytes (`sealed`: encrypted).
    pub fn file_len(len: u64, sealed: bool) -> u64 {
        let trailer = if sealed {
            crate::seal::TAG_LEN
        } else {
            crate::seal::CRC_LEN
        };
        HEADER_LEN + len + frames(len) * trailer as u64
    }

    /// A new blob file to be filled with stored bytes as they are (a copy another node
    /// encoded). It takes the blob's name only at [`Sink::commit`], so a copy cut short is
    /// never found under the id; dropping the sink uncommitted removes it. A copy already
    /// there is replaced at commit: every copy of a blob holds the same bytes, so the old
    /// one is either the same or damaged (a repair rewriting it).
    pub fn create_raw(&self, id: BlobId) -> Result<FileSink, BlobError> {
        let path = self.path(id);
        // Its own name per transfer: two copies of one blob arriving at once must not
        // write into one file.
        let partial = self.root.join(TMP_DIR).join(format!(
            "{}-{:032x}.part",
            id.to_hex(),
            uuid::Uuid::new_v4().as_u128()
        ));
        let file = create_new(&partial)?;
        Ok(FileSink {
            out: Some(file),
            path: partial,
            rename_to: Some(path),
        })
    }

    /// The stored bytes of a blob, unverified (the reader on the other end verifies them).
    pub fn open_raw(&self, id: BlobId) -> Result<File, BlobError> {
        match File::open(self.path(id)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(id)),
            Err(e) => Err(e.into()),
        }
    }
}

/// A blob file being written.
pub struct FileSink {
    out: Option<File>,
    path: PathBuf,
    /// For a raw copy: the blob's own name, taken at commit.
    rename_to: Option<PathBuf>,
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.out {
            Some(f) => f.write(buf),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for FileSink {
    fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        let Some(file) = self.out.take() else {
            return Err(BlobError::Io(std::io::ErrorKind::BrokenPipe.into()));
        };
        file.sync_all()?;
        drop(file);
        let at = match self.rename_to.take() {
            Some(to) => {
                std::fs::rename(&self.path, &to)?;
                to
            }
            None => std::mem::take(&mut self.path),
        };
        if let Some(dir) = at.parent() {
            fsync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // An uncommitted raw copy is only ever a partial one.
        if self.out.is_some() && self.rename_to.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A writer that encodes payload into frames (standard or cold, sealed under `key` when
/// given) and writes the stored bytes to `sink`.
pub fn framed_writer(
    id: BlobId,
    key: Option<&FrameKey>,
    cold: bool,
    sink: Box<dyn Sink>,
) -> Result<LocalBlobWriter, BlobError> {
    let guard = Guard::new(id, key);
    if cold {
        return Ok(LocalBlobWriter(Writer::Cold(Box::new(ColdWriter::new(
            sink, guard,
        )?))));
    }
    let mut out = BufWriter::with_capacity(1024 * 1024, sink);
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(if guard.sealed() { SEALED_MAGIC } else { MAGIC });
    header[8..12].copy_from_slice(&(FRAME_SIZE as u32).to_le_bytes());
    out.write_all(&header)?;
    Ok(LocalBlobWriter(Writer::Plain(PlainWriter {
        out,
        frame: Vec::with_capacity(FRAME_SIZE + guard.trailer_len()),
        guard,
        frame_index: 0,
        len: 0,
    })))
}

/// A verifying reader of the blob whose stored bytes `source` gives, either format (told
/// apart by the header magic), `len` payload bytes long as its record says.
pub fn framed_reader(
    id: BlobId,
    len: u64,
    key: Option<&FrameKey>,
    file: Box<dyn Source>,
) -> Result<LocalBlobReader, BlobError> {
    let guard = Guard::new(id, key);
    let mut magic = [0u8; 8];
    let cold = if guard.sealed() {
        COLD_SEALED_MAGIC
    } else {
        COLD_MAGIC
    };
    if file.read_exact_at(&mut magic, 0).is_ok() && &magic == cold {
        return Ok(LocalBlobReader(Reader::Cold(Box::new(ColdReader::open(
            id, file, len, guard,
        )?))));
    }
    let on_disk = file.size()?;
    let want = LocalBlobStore::file_len(len, guard.sealed());
    if on_disk != want {
        return Err(BlobError::Corrupt {
            id,
            reason: format!("file is {on_disk} bytes, expected {want}"),
        });
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    let magic = if guard.sealed() { SEALED_MAGIC } else { MAGIC };
    if &header[..8] != magic
        || header[8..12] != (FRAME_SIZE as u32).to_le_bytes()
        || header[12..] != [0; 4]
    {
        return Err(BlobError::Corrupt {
            id,
            reason: "bad header".into(),
        });
    }
    Ok(LocalBlobReader(Reader::Plain(PlainReader {
        id,
        file,
        len,
        guard,
        buf: Vec::new(),
    })))
}

impl BlobStore for LocalBlobStore {
    type Writer = LocalBlobWriter;
    type Reader = LocalBlobReader;

    fn create(&self, id: BlobId, key: Option<&FrameKey>) -> Result<LocalBlobWriter, BlobError> {
        let path = self.path(id);
        let file = create_new(&path)?;
        framed_writer(id, key, false, Box::new(FileSink::new(file, path)))
    }

    fn create_cold(
        &self,
        id: BlobId,
        key: Option<&FrameKey>,
    ) -> Result<LocalBlobWriter, BlobError> {
        let path = self.path(id);
        let file = create_new(&path)?;
        framed_writer(id, key, true, Box::new(FileSink::new(file, path)))
    }

    fn open(
        &self,
        id: BlobId,
        len: u64,
        key: Option<&FrameKey>,
    ) -> Result<LocalBlobReader, BlobError> {
        framed_reader(id, len, key, Box::new(self.open_raw(id)?))
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

impl FileSink {
    fn new(file: File, path: PathBuf) -> Self {
        Self {
            out: Some(file),
            path,
            rename_to: None,
        }
    }
}

/// A blob being written, in the standard or the cold (compressed) format, to any [`Sink`].
pub struct LocalBlobWriter(Writer);

enum Writer {
    Plain(PlainWriter),
    Cold(Box<ColdWriter>),
}

struct PlainWriter {
    out: BufWriter<Box<dyn Sink>>,
    /// The frame being filled. A full frame is sealed only once more data arrives (or at
    /// `finish`), because the last frame is sealed as last.
    frame: Vec<u8>,
    guard: Guard,
    frame_index: u64,
    len: u64,
}

impl PlainWriter {
    fn seal_frame(&mut self, last: bool) -> Result<(), BlobError> {
        self.guard.seal(self.frame_index, last, &mut self.frame);
        self.out.write_all(&self.frame)?;
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
            if self.frame.len() == FRAME_SIZE {
                self.seal_frame(false)?;
            }
            let room = FRAME_SIZE - self.frame.len();
            let n = room.min(data.len());
            self.frame.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64, BlobError> {
        if !self.frame.is_empty() {
            self.seal_frame(true)?;
        }
        self.out
            .into_inner()
            .map_err(|e| e.into_error())?
            .commit()?;
        Ok(self.len)
    }
}

/// A verified reader of either format, over any [`Source`].
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
    file: Box<dyn Source>,
    len: u64,
    guard: Guard,
    buf: Vec<u8>,
}

impl PlainReader {
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError> {
        let Some(end) = read_end(self.id, self.len, offset, len)? else {
            return Ok(Vec::new());
        };
        let frame = FRAME_SIZE as u64;
        let trailer = self.guard.trailer_len();
        let first = offset / frame;
        let last = (end - 1) / frame;
        let final_frame = (self.len - 1) / frame;
        let payload_start = first * frame;
        let payload_end = ((last + 1) * frame).min(self.len);
        let disk_start = HEADER_LEN + first * (frame + trailer as u64);
        let disk_len = (payload_end - payload_start) + (last - first + 1) * trailer as u64;
        self.buf.resize(disk_len as usize, 0);
        self.file.read_exact_at(&mut self.buf, disk_start)?;
        let mut out = Vec::with_capacity(len);
        let mut pos = 0usize;
        for i in first..=last {
            let plen = (frame.min(self.len - i * frame)) as usize;
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
            let stored = &mut self.buf[pos..pos + plen + trailer];
            self.guard
                .open_to(i, i == final_frame, stored, (from, to), &mut out)
                .map_err(|reason| BlobError::Corrupt {
                    id: self.id,
                    reason,
                })?;
            pos += plen + trailer;
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
        write_with(store, data, chunk, cold, None)
    }

    fn write_with(
        store: &LocalBlobStore,
        data: &[u8],
        chunk: usize,
        cold: bool,
        key: Option<&FrameKey>,
    ) -> BlobId {
        let id = BlobId::random();
        let mut w = if cold {
            store.create_cold(id, key).unwrap()
        } else {
            store.create(id, key).unwrap()
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
        fn any_range_reads_back(len in 0usize..300_000, chunk in 1usize..100_000, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), cold in any::<bool>(), sealed in any::<bool>(), noisy in 0usize..300_000) {
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
            let key = sealed.then(|| FrameKey::generate().unwrap());
            let id = write_with(&store, &data, chunk, cold, key.as_ref());
            let mut r = store.open(id, len as u64, key.as_ref()).unwrap();
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
            store.open(id, data.len() as u64 + 1, None),
            Err(BlobError::Corrupt { .. })
        ));

        // A flipped byte in frame 2 fails reads that touch frame 2 only.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (HEADER_LEN as usize) + 2 * (FRAME_SIZE + 4) + 17;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut r = store.open(id, data.len() as u64, None).unwrap();
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
        let mut r = store.open(id, data.len() as u64, None).unwrap();
        assert!(r.read(0, 10).is_err());

        // Truncated file.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            store.open(id, data.len() as u64, None),
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
        let mut r = store.open(id, data.len() as u64, None).unwrap();
        assert_eq!(r.read(0, data.len()).unwrap(), data);
        assert_eq!(
            r.read(3 * FRAME_SIZE as u64 - 5, 10).unwrap(),
            &data[3 * FRAME_SIZE - 5..3 * FRAME_SIZE + 5]
        );
        assert!(matches!(
            store.open(id, data.len() as u64 - 1, None),
            Err(BlobError::Corrupt { .. })
        ));
        // Every single-byte flip is either refused on open or caught by the frames it hits;
        // none yields wrong bytes.
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            if let Ok(mut r) = store.open(id, data.len() as u64, None) {
                match r.read(0, data.len()) {
                    Ok(got) => assert_eq!(got, data, "flip at {at} returned wrong bytes"),
                    Err(e) => assert!(matches!(e, BlobError::Corrupt { .. }), "{e}"),
                }
            }
        }
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(store.open(id, data.len() as u64, None).is_err());
    }

    /// Encrypted blobs: no plaintext on disk; a flipped byte, two swapped frames, a cut at a
    /// frame boundary, a wrong key or a missing key are all refused, never served.
    #[test]
    fn sealed_blobs_hide_data_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let marker = b"FEIYUN-PLAINTEXT-MARKER";
        let data: Vec<u8> = marker
            .iter()
            .copied()
            .cycle()
            .take(4 * FRAME_SIZE)
            .collect();
        for cold in [false, true] {
            let key = FrameKey::generate().unwrap();
            let id = write_with(&store, &data, 50_000, cold, Some(&key));
            let path = store.path(id);
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "cold={cold}"
            );
            let len = data.len() as u64;
            let read_all = |k: Option<&FrameKey>| store.open(id, len, k)?.read(0, data.len());
            assert_eq!(read_all(Some(&key)).unwrap(), data);
            assert!(read_all(None).is_err(), "opened without its key");
            assert!(read_all(Some(&FrameKey::generate().unwrap())).is_err());
            let step = if cold { 3 } else { 4093 };
            for at in (0..bytes.len()).step_by(step) {
                let mut bad = bytes.clone();
                bad[at] ^= 0x01;
                std::fs::write(&path, &bad).unwrap();
                assert!(read_all(Some(&key)).is_err(), "cold={cold} flip at {at}");
            }
            if !cold {
                let f = FRAME_SIZE + crate::seal::TAG_LEN;
                let h = HEADER_LEN as usize;
                let mut swapped = bytes.clone();
                let (a, b) = swapped[h..h + 2 * f].split_at_mut(f);
                a.swap_with_slice(b);
                std::fs::write(&path, &swapped).unwrap();
                assert!(
                    store
                        .open(id, len, Some(&key))
                        .unwrap()
                        .read(0, 10)
                        .is_err()
                );
                // Cut after frame 2, and told (by a forged record) that this is the length.
                std::fs::write(&path, &bytes[..h + 3 * f]).unwrap();
                let mut r = store.open(id, 3 * FRAME_SIZE as u64, Some(&key)).unwrap();
                assert_eq!(
                    r.read(0, 10).unwrap(),
                    &data[..10],
                    "earlier frames still read"
                );
                assert!(r.read(2 * FRAME_SIZE as u64, 10).is_err(), "new last frame");
                // A plaintext blob put where the encrypted one was is refused.
                let plain = write_blob(&store, &data, 70_000);
                std::fs::copy(store.path(plain), &path).unwrap();
                assert!(store.open(id, len, Some(&key)).is_err());
            }
            std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
            assert!(read_all(Some(&key)).is_err());
        }
    }

    /// A raw copy of a blob's stored bytes reads back like the original; one cut short is
    /// never found under the id.
    #[test]
    fn raw_copies_read_back_and_partial_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let data = pattern(2 * FRAME_SIZE + 3);
        let key = FrameKey::generate().unwrap();
        let id = write_with(&store, &data, 9_000, false, Some(&key));
        let stored = std::fs::read(store.path(id)).unwrap();
        let other = LocalBlobStore::open(&dir.path().join("other")).unwrap();
        let mut sink = other.create_raw(id).unwrap();
        sink.write_all(&stored[..100]).unwrap();
        drop(sink);
        assert!(!other.exists(id).unwrap());
        let mut sink = Box::new(other.create_raw(id).unwrap());
        sink.write_all(&stored).unwrap();
        sink.commit().unwrap();
        let mut r = other.open(id, data.len() as u64, Some(&key)).unwrap();
        assert_eq!(r.read(0, data.len()).unwrap(), data);
        // A damaged copy is replaced whole by a fresh one, never patched in place.
        let mut bad = stored.clone();
        bad[40] ^= 1;
        std::fs::write(other.path(id), &bad).unwrap();
        let mut sink = Box::new(other.create_raw(id).unwrap());
        sink.write_all(&stored).unwrap();
        sink.commit().unwrap();
        let mut r = other.open(id, data.len() as u64, Some(&key)).unwrap();
        assert_eq!(r.read(0, data.len()).unwrap(), data);
        let leftovers = std::fs::read_dir(other.path(id).parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(leftovers, 1);
        assert_eq!(
            std::fs::read_dir(other.root.join(TMP_DIR)).unwrap().count(),
            0
        );
        // A transfer cut by a crash is cleared when the store opens again.
        let cut = other.create_raw(BlobId::random()).unwrap();
        std::mem::forget(cut);
        assert_eq!(
            std::fs::read_dir(other.root.join(TMP_DIR)).unwrap().count(),
            1
        );
        let other = LocalBlobStore::open(&dir.path().join("other")).unwrap();
        assert_eq!(
            std::fs::read_dir(other.root.join(TMP_DIR)).unwrap().count(),
            0
        );
    }

    #[test]
    fn delete_is_idempotent_and_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let id = write_blob(&store, b"hello", 5);
        store.delete(id).unwrap();
        store.delete(id).unwrap();
        assert!(matches!(
            store.open(id, 5, None),
            Err(BlobError::NotFound(_))
        ));
    }
}
