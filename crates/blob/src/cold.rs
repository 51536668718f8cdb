//! The cold format: the same 64 KiB logical frames, each compressed on its own with zstd so a
//! Range read decompresses only the frames it touches.
//!
//! ```text
//! header  : "FYBLOBZ1" | frame_size: u32 LE | reserved: u32
//! frame i : stored bytes | crc32c(i as u64 LE || stored bytes): u32 LE
//! index   : one u32 LE per frame: stored length, high bit set when stored uncompressed
//! footer  : crc32c(index): u32 LE | reserved: u32 | frame count: u64 LE | payload length: u64 LE
//! ```
//!
//! Encrypted cold blobs (`FYBLOBZS`) compress first, then seal each frame's stored bytes
//! with AES-256-GCM (see `seal.rs`): a 16-byte tag replaces the crc32c; the index keeps the
//! stored lengths and its crc.
//!
//! Checksums cover the bytes as stored, so a flipped bit is caught before zstd ever sees it,
//! and the decompressed length of every frame is checked against the frame size. The footer
//! repeats the payload length, which must match the metadata record's.

use std::io::{BufWriter, Write};

use crate::local::{frame_crc, read_end};
use crate::seal::Guard;
use crate::{BlobError, BlobId, FRAME_SIZE, HEADER_LEN, Sink, Source};

pub const COLD_MAGIC: &[u8; 8] = b"FYBLOBZ1";
pub const COLD_SEALED_MAGIC: &[u8; 8] = b"FYBLOBZS";
const FOOTER_LEN: u64 = 24;
const RAW_BIT: u32 = 1 << 31;
/// zstd level 3: the library's default, ~3× on text at several hundred MB/s per core.
const LEVEL: i32 = 3;

pub struct ColdWriter {
    out: BufWriter<Box<dyn Sink>>,
    frame: Vec<u8>,
    scratch: Vec<u8>,
    index: Vec<u32>,
    len: u64,
    guard: Guard,
    compressor: zstd::bulk::Compressor<'static>,
}

impl ColdWriter {
    pub(crate) fn new(sink: Box<dyn Sink>, guard: Guard) -> Result<Self, BlobError> {
        let mut out = BufWriter::with_capacity(1024 * 1024, sink);
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(if guard.sealed() {
            COLD_SEALED_MAGIC
        } else {
            COLD_MAGIC
        });
        header[8..12].copy_from_slice(&(FRAME_SIZE as u32).to_le_bytes());
        out.write_all(&header)?;
        Ok(Self {
            out,
            frame: Vec::with_capacity(FRAME_SIZE),
            scratch: Vec::with_capacity(zstd::zstd_safe::compress_bound(FRAME_SIZE)),
            index: Vec::new(),
            len: 0,
            guard,
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
        })
    }

    /// Seals the buffered frame; a full frame waits for more data (or `finish`) because the
    /// last frame is sealed as last.
    fn seal_frame(&mut self, last: bool) -> Result<(), BlobError> {
        self.scratch.clear();
        self.compressor
            .compress_to_buffer(&self.frame, &mut self.scratch)?;
        // Incompressible frames stay raw: no gain on disk and no decompression on read.
        let entry = if self.scratch.len() < self.frame.len() {
            self.scratch.len() as u32
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.frame);
            self.frame.len() as u32 | RAW_BIT
        };
        let i = self.index.len() as u64;
        self.guard.seal(i, last, &mut self.scratch);
        self.out.write_all(&self.scratch)?;
        self.index.push(entry);
        self.frame.clear();
        Ok(())
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<(), BlobError> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            if self.frame.len() == FRAME_SIZE {
                self.seal_frame(false)?;
            }
            let n = (FRAME_SIZE - self.frame.len()).min(data.len());
            self.frame.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn finish(mut self) -> Result<u64, BlobError> {
        if !self.frame.is_empty() {
            self.seal_frame(true)?;
        }
        let index: Vec<u8> = self.index.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.out.write_all(&index)?;
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[..4].copy_from_slice(&frame_crc(u64::MAX, &index).to_le_bytes());
        footer[8..16].copy_from_slice(&(self.index.len() as u64).to_le_bytes());
        footer[16..24].copy_from_slice(&self.len.to_le_bytes());
        self.out.write_all(&footer)?;
        self.out
            .into_inner()
            .map_err(|e| e.into_error())?
            .commit()?;
        Ok(self.len)
    }
}

pub struct ColdReader {
    id: BlobId,
    file: Box<dyn Source>,
    len: u64,
    /// Where frame i starts on disk (`frames + 1` entries; the last is where the index starts).
    starts: Vec<u64>,
    raw: Vec<bool>,
    guard: Guard,
    buf: Vec<u8>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl ColdReader {
    /// Validates footer and index against the file size and the expected payload length.
    pub(crate) fn open(
        id: BlobId,
        file: Box<dyn Source>,
        len: u64,
        guard: Guard,
    ) -> Result<Self, BlobError> {
        let corrupt = |reason: String| BlobError::Corrupt { id, reason };
        let on_disk = file.size()?;
        if on_disk < HEADER_LEN + FOOTER_LEN {
            return Err(corrupt(format!("file is only {on_disk} bytes")));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut footer, on_disk - FOOTER_LEN)?;
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&footer[r]);
            u64::from_le_bytes(b)
        };
        let (index_crc, frames, stored_len) = (word(0..4) as u32, word(8..16), word(16..24));
        if word(4..8) != 0 {
            return Err(corrupt("bad footer".into()));
        }
        if stored_len != len || frames != len.div_ceil(FRAME_SIZE as u64) {
            return Err(corrupt(format!(
                "footer says {stored_len} bytes in {frames} frames, expected {len}"
            )));
        }
        let index_len = frames * 4;
        let index_at = (on_disk - FOOTER_LEN)
            .checked_sub(index_len)
            .filter(|at| *at >= HEADER_LEN)
            .ok_or_else(|| corrupt("index does not fit in the file".into()))?;
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_at)?;
        if frame_crc(u64::MAX, &index) != index_crc {
            return Err(corrupt("frame index failed its checksum".into()));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0)?;
        let magic = if guard.sealed() {
            COLD_SEALED_MAGIC
        } else {
            COLD_MAGIC
        };
        if &header[..8] != magic
            || header[12..] != [0; 4]
            || header[8..12] != (FRAME_SIZE as u32).to_le_bytes()
        {
            return Err(corrupt("bad header".into()));
        }
        let mut starts = Vec::with_capacity(frames as usize + 1);
        let mut raw = Vec::with_capacity(frames as usize);
        let mut at = HEADER_LEN;
        for e in index.chunks_exact(4) {
            let e = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            starts.push(at);
            raw.push(e & RAW_BIT != 0);
            at += u64::from(e & !RAW_BIT) + guard.trailer_len() as u64;
        }
        starts.push(at);
        if at != index_at {
            return Err(corrupt("frame lengths do not add up to the file".into()));
        }
        Ok(Self {
            id,
            file,
            len,
            starts,
            raw,
            guard,
            buf: Vec::new(),
            decompressor: zstd::bulk::Decompressor::new()?,
        })
    }

    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError> {
        let Some(end) = read_end(self.id, self.len, offset, len)? else {
            return Ok(Vec::new());
        };
        let frame = FRAME_SIZE as u64;
        let (first, last) = (offset / frame, (end - 1) / frame);
        let disk_start = self.starts[first as usize];
        let disk_end = self.starts[last as usize + 1];
        self.buf.resize((disk_end - disk_start) as usize, 0);
        self.file.read_exact_at(&mut self.buf, disk_start)?;
        let mut out = Vec::with_capacity(len);
        let mut plain = Vec::with_capacity(FRAME_SIZE);
        let final_frame = (self.len - 1) / frame;
        for i in first..=last {
            let at = (self.starts[i as usize] - disk_start) as usize;
            let stop = (self.starts[i as usize + 1] - disk_start) as usize;
            let id = self.id;
            let corrupt = |reason: String| BlobError::Corrupt { id, reason };
            let stored = self
                .guard
                .open(i, i == final_frame, &mut self.buf[at..stop])
                .map_err(corrupt)?;
            let want = frame.min(self.len - i * frame) as usize;
            let payload: &[u8] = if self.raw[i as usize] {
                stored
            } else {
                plain.clear();
                self.decompressor
                    .decompress_to_buffer(stored, &mut plain)
                    .map_err(|e| corrupt(format!("frame {i} does not decompress: {e}")))?;
                &plain
            };
            if payload.len() != want {
                return Err(corrupt(format!(
                    "frame {i} holds {} bytes, expected {want}",
                    payload.len()
                )));
            }
            let from = if i == first {
                (offset - i * frame) as usize
            } else {
                0
            };
            let to = if i == last {
                (end - i * frame) as usize
            } else {
                want
            };
            out.extend_from_slice(&payload[from..to]);
        }
        Ok(out)
    }
}
