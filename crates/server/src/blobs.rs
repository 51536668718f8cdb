//! The region's blob engine, chosen at start: files in the data directory, or copies across
//! the nodes of a multi-node region. One enum rather than a generic server, as for the
//! metadata engine, so the services are compiled once for both.

use feiyun_blob::{
    BlobError, BlobId, BlobReader, BlobStore, FrameKey, LocalBlobReader, LocalBlobStore,
    LocalBlobWriter,
};
use feiyun_cluster::{ClusterBlobStore, ClusterReader};

use crate::Store;

pub enum Blobs {
    Local(LocalBlobStore),
    Cluster(ClusterBlobStore<Store>),
}

pub enum BlobsReader {
    Local(LocalBlobReader),
    Cluster(ClusterReader<Store>),
}

impl BlobReader for BlobsReader {
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError> {
        match self {
            BlobsReader::Local(r) => r.read(offset, len),
            BlobsReader::Cluster(r) => r.read(offset, len),
        }
    }
}

impl BlobStore for Blobs {
    // Both encode frames alike; only where the stored bytes go differs.
    type Writer = LocalBlobWriter;
    type Reader = BlobsReader;

    fn create(&self, id: BlobId, key: Option<&FrameKey>) -> Result<LocalBlobWriter, BlobError> {
        match self {
            Blobs::Local(b) => b.create(id, key),
            Blobs::Cluster(b) => b.create(id, key),
        }
    }

    fn create_cold(
        &self,
        id: BlobId,
        key: Option<&FrameKey>,
    ) -> Result<LocalBlobWriter, BlobError> {
        match self {
            Blobs::Local(b) => b.create_cold(id, key),
            Blobs::Cluster(b) => b.create_cold(id, key),
        }
    }

    fn open(&self, id: BlobId, len: u64, key: Option<&FrameKey>) -> Result<BlobsReader, BlobError> {
        Ok(match self {
            Blobs::Local(b) => BlobsReader::Local(b.open(id, len, key)?),
            Blobs::Cluster(b) => BlobsReader::Cluster(b.open(id, len, key)?),
        })
    }

    fn delete(&self, id: BlobId) -> Result<(), BlobError> {
        match self {
            Blobs::Local(b) => b.delete(id),
            Blobs::Cluster(b) => b.delete(id),
        }
    }

    fn exists(&self, id: BlobId) -> Result<bool, BlobError> {
        match self {
            Blobs::Local(b) => b.exists(id),
            Blobs::Cluster(b) => b.exists(id),
        }
    }
}
