//! The cipher's raw speed and what it costs the blob engine, on this machine: AES-256-GCM
//! sealing and opening of 64 KiB frames by aws-lc-rs alone, then writing and reading a
//! 256 MiB blob through `LocalBlobStore` plain (crc32c frames) and sealed (GCM frames) into
//! a temporary directory (page cache; fsync once at the end, as a PUT does). Plain
//! `harness = false` timing: five runs each, median reported in MB/s (10^6 bytes).

use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use feiyun_blob::{
    BlobId, BlobReader, BlobStore, BlobWriter, FRAME_SIZE, FrameKey, LocalBlobStore,
};

const BLOB: usize = 256 << 20;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn main() {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let mut frame = vec![0x5au8; FRAME_SIZE];
    let frames = BLOB / FRAME_SIZE;
    let (mut seal, mut open) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut tags = Vec::with_capacity(frames);
        for i in 0..frames {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(b"x"),
                    &mut frame,
                )
                .unwrap();
            tags.push(tag);
        }
        seal.push(mbps(BLOB, t.elapsed().as_secs_f64()));
        // Open what the last frame's seal produced, `frames` times (same work per frame).
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&((frames - 1) as u64).to_be_bytes());
        let mut sealed = frame.clone();
        sealed.extend_from_slice(tags[frames - 1].as_ref());
        let t = Instant::now();
        for _ in 0..frames {
            let mut buf = sealed.clone();
            key.open_in_place(Nonce::assume_unique_for_key(n), Aad::from(b"x"), &mut buf)
                .unwrap();
        }
        open.push(mbps(BLOB, t.elapsed().as_secs_f64()));
    }
    println!(
        "aes-256-gcm seal 64KiB frames (aws-lc-rs): {:.0} MB/s",
        median(seal)
    );
    println!(
        "aes-256-gcm open 64KiB frames (aws-lc-rs, incl. one copy): {:.0} MB/s",
        median(open)
    );

    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    for sealed in [false, true] {
        let (mut w, mut r) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let id = BlobId::random();
            let key = sealed.then(|| FrameKey::generate().unwrap());
            let t = Instant::now();
            let mut wr = store.create(id, key.as_ref()).unwrap();
            for _ in 0..BLOB / data.len() {
                wr.write(&data).unwrap();
            }
            wr.finish().unwrap();
            w.push(mbps(BLOB, t.elapsed().as_secs_f64()));
            let t = Instant::now();
            let mut rd = store.open(id, BLOB as u64, key.as_ref()).unwrap();
            let mut at = 0;
            while at < BLOB {
                let got = rd.read(at as u64, data.len()).unwrap();
                at += got.len();
            }
            r.push(mbps(BLOB, t.elapsed().as_secs_f64()));
            store.delete(id).unwrap();
        }
        let label = if sealed {
            "sealed (GCM)"
        } else {
            "plain (crc32c)"
        };
        println!("blob write {label}: {:.0} MB/s", median(w));
        println!("blob read  {label}: {:.0} MB/s", median(r));
    }
}
