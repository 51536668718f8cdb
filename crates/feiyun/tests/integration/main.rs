//! The integration tests: the real `feiyun` binary started per test, driven by real clients
//! (aws-sdk-s3, raw HTTP where a client would refuse to send the request, the CLI itself).
//! One test binary rather than one per file: each links wasmtime, the AWS SDK and the rest,
//! and linking them fifteen times was a quarter of a cold CI run.

mod common;

mod access_matrix;
mod bad_input;
mod cluster;
mod cluster_blobs;
mod cluster_erasure;
mod corruption;
mod cors;
mod crash;
mod encryption;
mod functions;
mod hardening;
mod iam;
mod lifecycle;
mod meta_pg;
mod migrate;
mod migrate_history;
mod migrate_iam;
mod migrate_journal;
mod migrate_live;
mod migrate_minio_iam;
mod notifications;
mod replication;
mod sdk;
mod sql;
mod tls;
mod versioning;
