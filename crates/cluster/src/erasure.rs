//! Erasure-coded blobs: the stored bytes of a blob split into `k` data and `m` parity shards
//! (Reed–Solomon, `reed-solomon-simd`), one shard per node, readable while any `k` are.
//!
//! Coding sits under the frame encoder, as replication does: the node taking a write encodes
//! frames once and stripes the encoded bytes, so the frames' checksums (or seal) still
//! verify whatever a reader reconstructs, and a reconstruction that went wrong reads as a
//! damaged blob, never as other bytes.
//!
//! Layout: the stored bytes are cut into stripes of `k` units of `unit` bytes (the last
//! stripe's units shorter, just enough for what is left, rounded up to an even length as the
//! coder needs); shard `i` holds unit `i` of every stripe (parity for `i >= k`), each unit
//! followed by a CRC-32C over its stripe number and bytes, so a damaged or misplaced unit is
//! found and rebuilt from the others rather than handed to the frame reader. A shard is kept
//! on its node under its own id ([`shard_id`]) in the same raw form as a replica.

use std::io;
use std::sync::Mutex;

use crc_fast::{CrcAlgorithm, Digest};
use feiyun_blob::{BlobError, BlobId, Source};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Bytes of each data unit of a full stripe.
pub const UNIT: usize = 256 * 1024;
/// The CRC after each unit.
const CRC_LEN: usize = 4;
/// The largest stored size a record may name (S3's largest object is 5 TiB): keeps every
/// offset computation far from overflow.
const MAX_SIZE: u64 = 1 << 50;

/// `k` data shards and `m` parity shards, written `k+m` (as `4+2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub k: u8,
    pub m: u8,
}

impl Layout {
    pub fn shards(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

/// What a placement record says of an erasure-coded blob: its layout, unit and stored size
/// (0 while the write is in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    pub k: u8,
    pub m: u8,
    pub unit: u32,
    pub size: u64,
}

impl Coded {
    /// Within what a writer produces: a layout the config accepts and an even unit.
    pub(crate) fn sound(&self) -> bool {
        (2..=32).contains(&self.k)
            && (1..=16).contains(&self.m)
            && self.m <= self.k
            && self.unit >= 2
            && self.unit.is_multiple_of(2)
            && self.unit as usize <= UNIT
            && self.size <= MAX_SIZE
    }

    fn k(&self) -> usize {
        usize::from(self.k)
    }
    fn shards(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }
    fn stripe_bytes(&self) -> u64 {
        self.unit as u64 * self.k as u64
    }
    /// Full stripes, and the unit length of the short last one (0 when there is none).
    fn geometry(&self) -> (u64, usize) {
        let full = self.size / self.stripe_bytes();
        let rest = self.size % self.stripe_bytes();
        (full, last_unit(rest as usize, self.k()))
    }
    pub(crate) fn stripes(&self) -> u64 {
        let (full, last) = self.geometry();
        full + u64::from(last > 0)
    }
    /// The unit length of stripe `j`.
    fn unit_len(&self, j: u64) -> usize {
        let (full, last) = self.geometry();
        if j < full { self.unit as usize } else { last }
    }
    /// Where stripe `j`'s unit starts in a shard.
    fn unit_at(&self, j: u64) -> u64 {
        j * (self.unit as u64 + CRC_LEN as u64)
    }
    /// Where stripe `j` starts in the stored bytes.
    fn stripe_at(&self, j: u64) -> u64 {
        j * self.stripe_bytes()
    }
}

/// The unit length that holds `rest` bytes in `k` units: even, and at least 2.
pub(crate) fn last_unit(rest: usize, k: usize) -> usize {
    if rest == 0 {
        return 0;
    }
    let n = rest.div_ceil(k);
    (n + (n & 1)).max(2)
}

/// The id shard `i` of blob `id` is stored under: distinct per shard, so two shards of one
/// blob never meet on a node even after repair moves them, and unrelated to any other blob.
pub fn shard_id(id: BlobId, i: usize) -> BlobId {
    let mut h = Sha256::new();
    h.update(b"feiyun erasure shard v1");
    h.update(id.to_bytes());
    h.update((i as u32).to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    BlobId(u128::from_be_bytes(b))
}

/// Over the unit's shard and stripe numbers and bytes: a unit served from another shard's or
/// stripe's place fails it.
fn unit_crc(i: usize, j: u64, bytes: &[u8]) -> u32 {
    let mut d = Digest::new(CrcAlgorithm::Crc32Iscsi);
    d.update(&(i as u32).to_le_bytes());
    d.update(&j.to_le_bytes());
    d.update(bytes);
    d.finalize() as u32
}

/// Unit `j` of shard `i` as stored: its bytes, then its CRC.
pub(crate) fn framed_unit(i: usize, j: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + CRC_LEN);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&unit_crc(i, j, bytes).to_le_bytes());
    out
}

/// The parity units of one stripe's data units (all of one even length).
pub(crate) fn parity(layout: Layout, data: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, BlobError> {
    reed_solomon_simd::encode(usize::from(layout.k), usize::from(layout.m), data)
        .map_err(|e| BlobError::Io(io::Error::other(format!("erasure coding: {e}"))))
}

/// Cuts one stripe of stored bytes (at most `k * unit`) into its `k` data units, the last
/// ones zero-padded.
pub(crate) fn split(stripe: &[u8], k: usize, unit: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| {
            let start = (i * unit).min(stripe.len());
            let end = ((i + 1) * unit).min(stripe.len());
            let mut u = stripe[start..end].to_vec();
            u.resize(unit, 0);
            u
        })
        .collect()
}

/// Too few shards answered: carried through the frame reader's `io::Error` so that the
/// blob store reports it as unavailable (503), not as an internal error.
#[derive(Debug)]
pub(crate) struct ShortOfShards(String);

impl std::fmt::Display for ShortOfShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShortOfShards {}

/// A coded read's error in its class: a shortage of shards is unavailability, data the
/// shards cannot rebuild is damage.
pub(crate) fn classify(e: BlobError, id: BlobId) -> BlobError {
    match e {
        BlobError::Io(io) => match io.get_ref() {
            Some(inner) if inner.is::<ShortOfShards>() => BlobError::Unavailable(io.to_string()),
            _ if io.kind() == io::ErrorKind::InvalidData => BlobError::Corrupt {
                id,
                reason: io.to_string(),
            },
            _ => BlobError::Io(io),
        },
        e => e,
    }
}

/// Reads every unit of shard `i` as stored and checks its length and CRCs; returns the bytes
/// read. The scrubber's check: a healthy read touches parity only when a data shard fails,
/// so damage to a parity shard is otherwise found only once it is needed.
pub(crate) fn verify_shard(coded: &Coded, i: usize, src: &dyn Source) -> Result<u64, BlobError> {
    let corrupt = |reason: String| BlobError::Corrupt {
        id: BlobId(0),
        reason,
    };
    let stripes = coded.stripes();
    let want = shard_len(coded);
    let size = src.size().map_err(BlobError::Io)?;
    if size != want {
        return Err(corrupt(format!(
            "shard {i} is {size} bytes, expected {want}"
        )));
    }
    let mut buf = Vec::new();
    for j in 0..stripes {
        let len = coded.unit_len(j);
        buf.resize(len + CRC_LEN, 0);
        src.read_exact_at(&mut buf, coded.unit_at(j))
            .map_err(BlobError::Io)?;
        let (bytes, crc) = buf.split_at(len);
        if crc != unit_crc(i, j, bytes).to_le_bytes() {
            return Err(corrupt(format!("shard {i}, stripe {j}: checksum mismatch")));
        }
    }
    Ok(want)
}

/// Where the shards of one blob are read from: opened on first use, each either a node's
/// shard or nothing (its node gone).
pub(crate) trait ShardSources: Send + Sync + 'static {
    fn open(&self, shard: usize) -> Result<Box<dyn Source>, BlobError>;
    /// A shard read failed: for metrics and repair.
    fn failed(&self, shard: usize, e: &BlobError);
}

/// The stored bytes of an erasure-coded blob, reconstructed from any `k` good shards.
pub(crate) struct CodedSource<S: ShardSources> {
    coded: Coded,
    shards: S,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Vec<Option<Box<dyn Source>>>,
    /// Shards that failed once: not read again by this reader.
    bad: Vec<bool>,
    /// The last stripe read, as its data units: frames are read in order, several a stripe.
    cached: Option<(u64, Vec<Vec<u8>>)>,
}

impl<S: ShardSources> CodedSource<S> {
    pub(crate) fn new(coded: Coded, shards: S, known_bad: &[usize]) -> Self {
        let n = coded.shards();
        let mut bad = vec![false; n];
        for &i in known_bad {
            if i < n {
                bad[i] = true;
            }
        }
        Self {
            coded,
            shards,
            state: Mutex::new(State {
                open: (0..n).map(|_| None).collect(),
                bad,
                cached: None,
            }),
        }
    }

    /// Shards not known bad.
    pub(crate) fn usable(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |s| s.bad.iter().filter(|b| !**b).count())
    }

    fn read_unit(&self, st: &mut State, i: usize, j: u64) -> Result<Vec<u8>, BlobError> {
        if st.open[i].is_none() {
            st.open[i] = Some(self.shards.open(i)?);
        }
        let len = self.coded.unit_len(j);
        let mut buf = vec![0u8; len + CRC_LEN];
        let src = st.open[i].as_ref().ok_or(BlobError::NotFound(BlobId(0)))?;
        src.read_exact_at(&mut buf, self.coded.unit_at(j))
            .map_err(|e| match e.kind() {
                // The shard's node answered that it has no such shard.
                io::ErrorKind::NotFound => BlobError::NotFound(BlobId(i as u128)),
                _ => BlobError::Io(e),
            })?;
        let (bytes, crc) = buf.split_at(len);
        if crc != unit_crc(i, j, bytes).to_le_bytes() {
            return Err(BlobError::Corrupt {
                id: BlobId(0),
                reason: format!("shard {i}, stripe {j}: checksum mismatch"),
            });
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// The `k` data units of stripe `j`, rebuilt from parity where a data shard fails.
    pub(crate) fn stripe(&self, j: u64) -> Result<Vec<Vec<u8>>, BlobError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| BlobError::Io(io::Error::other("erasure reader poisoned")))?;
        if let Some((cj, units)) = &st.cached
            && *cj == j
        {
            return Ok(units.clone());
        }
        let (k, n) = (self.coded.k(), self.coded.shards());
        let mut got: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut damaged = vec![false; n];
        let mut good = 0;
        // Data shards first (no decoding when all answer), then parity as needed. A damaged
        // unit is skipped for this stripe only; a shard that did not answer is skipped from
        // then on, and tried once more before the stripe is given up.
        for retry in [false, true] {
            for (i, slot) in got.iter_mut().enumerate() {
                if good == k {
                    break;
                }
                if slot.is_some() || damaged[i] || st.bad[i] != retry {
                    continue;
                }
                if retry {
                    st.open[i] = None;
                }
                match self.read_unit(&mut st, i, j) {
                    Ok(u) => {
                        *slot = Some(u);
                        good += 1;
                        st.bad[i] = false;
                    }
                    Err(e) => {
                        let whole_shard = !matches!(e, BlobError::Corrupt { .. });
                        damaged[i] =
                            matches!(e, BlobError::Corrupt { .. } | BlobError::NotFound(_));
                        if whole_shard {
                            st.bad[i] = true;
                            st.open[i] = None;
                        }
                        if !retry {
                            self.shards.failed(i, &e);
                        }
                    }
                }
            }
            if good == k {
                break;
            }
        }
        if good < k {
            let lost = damaged.iter().filter(|d| **d).count();
            let msg = format!(
                "{good} of the {n} shards of an erasure-coded blob could be read for stripe {j}; {k} are needed"
            );
            // Shards that may answer later (their node down or cut) make it unavailable;
            // more than m damaged or missing is data lost.
            return Err(if n - lost >= k {
                BlobError::Unavailable(msg)
            } else {
                BlobError::Corrupt {
                    id: BlobId(0),
                    reason: msg,
                }
            });
        }
        let units: Vec<Vec<u8>> = if got[..k].iter().all(Option::is_some) {
            got.into_iter().take(k).flatten().collect()
        } else {
            let originals = got[..k]
                .iter()
                .enumerate()
                .filter_map(|(i, u)| u.as_ref().map(|u| (i, u)));
            let recovery = got[k..]
                .iter()
                .enumerate()
                .filter_map(|(i, u)| u.as_ref().map(|u| (i, u)));
            let restored = reed_solomon_simd::decode(k, n - k, originals, recovery)
                .map_err(|e| BlobError::Io(io::Error::other(format!("erasure decoding: {e}"))))?;
            (0..k)
                .map(|i| {
                    got[i]
                        .take()
                        .or_else(|| restored.get(&i).cloned())
                        .ok_or_else(|| BlobError::Io(io::Error::other("a shard was not restored")))
                })
                .collect::<Result<_, _>>()?
        };
        st.cached = Some((j, units.clone()));
        Ok(units)
    }

    /// Unit `i` of stripe `j`, data or parity, for rebuilding a lost shard.
    pub(crate) fn rebuild_unit(&self, i: usize, j: u64) -> Result<Vec<u8>, BlobError> {
        let data = self.stripe(j)?;
        let k = self.coded.k();
        if i < k {
            return Ok(data[i].clone());
        }
        let layout = Layout {
            k: self.coded.k,
            m: self.coded.m,
        };
        parity(layout, &data)?
            .into_iter()
            .nth(i - k)
            .ok_or_else(|| BlobError::Io(io::Error::other("no such parity shard")))
    }
}

impl<S: ShardSources> Source for CodedSource<S> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.coded.size)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.coded.size)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the blob's end"))?;
        let mut at = offset;
        while at < end {
            let j = at / self.coded.stripe_bytes();
            let units = self.stripe(j).map_err(|e| match e {
                BlobError::Io(e) => e,
                BlobError::Unavailable(m) => io::Error::other(ShortOfShards(m)),
                e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            let ulen = self.coded.unit_len(j);
            let within = (at - self.coded.stripe_at(j)) as usize;
            let (u, from) = (within / ulen, within % ulen);
            let n = (ulen - from).min((end - at) as usize);
            let dst = (at - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&units[u][from..from + n]);
            at += n as u64;
        }
        Ok(())
    }
}

/// A shard's length in all: its units, each with its CRC.
fn shard_len(coded: &Coded) -> u64 {
    let (full, last) = coded.geometry();
    full * (coded.unit as u64 + CRC_LEN as u64) + if last > 0 { (last + CRC_LEN) as u64 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Shards in memory, some gone, one optionally with a flipped byte.
    struct Mem {
        shards: Vec<Option<Arc<Vec<u8>>>>,
        failures: Arc<AtomicUsize>,
    }

    struct Bytes(Arc<Vec<u8>>);
    impl Source for Bytes {
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            let s = self
                .0
                .get(o..o + buf.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "short"))?;
            buf.copy_from_slice(s);
            Ok(())
        }
    }

    impl ShardSources for Mem {
        fn open(&self, i: usize) -> Result<Box<dyn Source>, BlobError> {
            match &self.shards[i] {
                Some(b) => Ok(Box::new(Bytes(b.clone()))),
                None => Err(BlobError::NotFound(BlobId(i as u128))),
            }
        }
        fn failed(&self, _: usize, _: &BlobError) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Encodes `data` as the writer does: stripe by stripe, unit plus CRC per shard.
    fn encode(layout: Layout, unit: usize, data: &[u8]) -> (Coded, Vec<Vec<u8>>) {
        let k = usize::from(layout.k);
        let mut shards = vec![Vec::new(); layout.shards()];
        for (j, stripe) in data.chunks(k * unit).enumerate() {
            let ulen = if stripe.len() == k * unit {
                unit
            } else {
                last_unit(stripe.len(), k)
            };
            let units = split(stripe, k, ulen);
            let par = parity(layout, &units).unwrap();
            for (i, u) in units.iter().chain(par.iter()).enumerate() {
                shards[i].extend(framed_unit(i, j as u64, u));
            }
        }
        let coded = Coded {
            k: layout.k,
            m: layout.m,
            unit: unit as u32,
            size: data.len() as u64,
        };
        for s in &shards {
            assert_eq!(s.len() as u64, shard_len(&coded));
        }
        (coded, shards)
    }

    fn source(coded: Coded, shards: &[Vec<u8>], gone: &[usize]) -> CodedSource<Mem> {
        let mem = Mem {
            shards: shards
                .iter()
                .enumerate()
                .map(|(i, s)| (!gone.contains(&i)).then(|| Arc::new(s.clone())))
                .collect(),
            failures: Arc::default(),
        };
        CodedSource::new(coded, mem, &[])
    }

    fn read_all(src: &CodedSource<Mem>, len: usize, piece: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let n = piece.min(len - at);
            src.read_exact_at(&mut out[at..at + n], at as u64)?;
            at += n;
        }
        Ok(out)
    }

    #[test]
    fn the_scrubber_passes_sound_shards_and_finds_damaged_or_short_ones() {
        let layout = Layout { k: 4, m: 2 };
        let data: Vec<u8> = (0..3 * 4 * 4096 + 4097)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let (coded, shards) = encode(layout, 4096, &data);
        for (i, s) in shards.iter().enumerate() {
            let sound = Bytes(Arc::new(s.clone()));
            assert_eq!(verify_shard(&coded, i, &sound).unwrap(), shard_len(&coded));
            // Served as another shard's, a sound shard fails: the CRC covers its index.
            let other = (i + 1) % shards.len();
            assert!(matches!(
                verify_shard(&coded, other, &sound),
                Err(BlobError::Corrupt { .. })
            ));
            for at in [0, s.len() / 2, s.len() - 1] {
                let mut bad = s.clone();
                bad[at] ^= 1;
                assert!(matches!(
                    verify_shard(&coded, i, &Bytes(Arc::new(bad))),
                    Err(BlobError::Corrupt { .. })
                ));
            }
            let short = Bytes(Arc::new(s[..s.len() - 1].to_vec()));
            assert!(matches!(
                verify_shard(&coded, i, &short),
                Err(BlobError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn any_k_shards_give_back_every_byte_and_fewer_give_an_error() {
        let layout = Layout { k: 4, m: 2 };
        let unit = 4096;
        // Sizes around stripe boundaries, and an odd tail.
        for len in [
            1usize,
            17,
            4 * 4096 - 1,
            4 * 4096,
            4 * 4096 + 3,
            3 * 4 * 4096 + 4097,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (coded, shards) = encode(layout, unit, &data);
            for gone in [
                vec![],
                vec![0],
                vec![3],
                vec![4],
                vec![1, 2],
                vec![0, 5],
                vec![4, 5],
            ] {
                let src = source(coded, &shards, &gone);
                assert_eq!(
                    read_all(&src, len, 1000).unwrap(),
                    data,
                    "len {len}, gone {gone:?}"
                );
            }
            let src = source(coded, &shards, &[0, 1, 4]);
            let e = read_all(&src, len, 1000).unwrap_err();
            assert!(e.to_string().contains("3 of the 6 shards"), "{e}");
        }
    }

    #[test]
    fn a_damaged_unit_is_rebuilt_not_returned() {
        let layout = Layout { k: 4, m: 2 };
        let data: Vec<u8> = (0..50_000).map(|i| (i % 199) as u8).collect();
        let (coded, mut shards) = encode(layout, 4096, &data);
        shards[2][10] ^= 0x40;
        shards[5][5000] ^= 0x01;
        let src = source(coded, &shards, &[]);
        assert_eq!(read_all(&src, data.len(), 7000).unwrap(), data);
        assert!(src.shards.failures.load(Ordering::Relaxed) >= 1);
        // A unit moved to another stripe's place fails its CRC too (the stripe number is in it).
        let (coded, mut shards) = encode(layout, 4096, &data);
        let unit = 4096 + CRC_LEN;
        let (a, b) = shards[1].split_at_mut(unit);
        a.swap_with_slice(&mut b[..unit]);
        let src = source(coded, &shards, &[]);
        assert_eq!(read_all(&src, data.len(), 7000).unwrap(), data);
    }

    #[test]
    fn damage_spread_over_more_shards_than_parity_still_reads_stripe_by_stripe() {
        // 4+2, and damaged units in three shards, each in a different stripe: every stripe
        // has five good units, so everything reads although three shards had a bad unit.
        let layout = Layout { k: 4, m: 2 };
        let unit = 4096;
        let data: Vec<u8> = (0..6 * 4 * unit).map(|i| (i % 241) as u8).collect();
        let (coded, mut shards) = encode(layout, unit, &data);
        let at = |j: usize| j * (unit + CRC_LEN) + 7;
        shards[0][at(1)] ^= 1;
        shards[1][at(3)] ^= 1;
        shards[2][at(5)] ^= 1;
        let src = source(coded, &shards, &[]);
        assert_eq!(read_all(&src, data.len(), 5000).unwrap(), data);
        // Three damaged units in one stripe are more than parity: damage, not unavailability.
        let (coded, mut shards) = encode(layout, unit, &data);
        for s in &mut shards[..3] {
            s[at(2)] ^= 1;
        }
        let src = source(coded, &shards, &[]);
        let e = read_all(&src, data.len(), 5000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(matches!(
            classify(BlobError::Io(e), BlobId(9)),
            BlobError::Corrupt { .. }
        ));
    }

    #[test]
    fn shards_out_of_reach_are_unavailable_not_damage() {
        let layout = Layout { k: 2, m: 1 };
        let data = vec![7u8; 10_000];
        let (coded, shards) = encode(layout, 4096, &data);
        // Known down at open: two of three shards.
        let src = CodedSource::new(
            coded,
            Mem {
                shards: shards.iter().map(|s| Some(Arc::new(s.clone()))).collect(),
                failures: Arc::default(),
            },
            &[0, 1],
        );
        // Tried once more before giving up: they answer, so the read succeeds.
        assert_eq!(read_all(&src, data.len(), 3000).unwrap(), data);
        let short = io::Error::other(ShortOfShards("x".into()));
        assert!(matches!(
            classify(BlobError::Io(short), BlobId(1)),
            BlobError::Unavailable(_)
        ));
    }

    #[test]
    fn lost_shards_rebuild_to_their_stored_bytes() {
        let layout = Layout { k: 3, m: 2 };
        let data: Vec<u8> = (0..40_000).map(|i| (i * 7 % 256) as u8).collect();
        let (coded, shards) = encode(layout, 4096, &data);
        let src = source(coded, &shards, &[1, 3]);
        for i in [1usize, 3] {
            let mut rebuilt = Vec::new();
            for j in 0..coded.stripes() {
                rebuilt.extend(framed_unit(i, j, &src.rebuild_unit(i, j).unwrap()));
            }
            assert_eq!(rebuilt, shards[i], "shard {i}");
        }
    }

    #[test]
    fn unsound_records_are_refused() {
        let good = Coded {
            k: 4,
            m: 2,
            unit: UNIT as u32,
            size: 10,
        };
        assert!(good.sound());
        for bad in [
            Coded { unit: 0, ..good },
            Coded { unit: 3, ..good },
            Coded { k: 0, ..good },
            Coded { m: 0, ..good },
            Coded { k: 2, m: 3, ..good },
        ] {
            assert!(!bad.sound(), "{bad:?}");
        }
        let p = crate::placement::Placement {
            nodes: vec!["a".into(); 5],
            coded: Some(good),
        };
        assert_eq!(
            crate::placement::Placement::decode(&p.encode()),
            None,
            "5 holders for 6 shards"
        );
    }

    #[test]
    fn shard_ids_differ_per_shard_and_blob() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..50u128 {
            for i in 0..6 {
                assert!(seen.insert(shard_id(BlobId(b), i)));
            }
        }
    }
}
