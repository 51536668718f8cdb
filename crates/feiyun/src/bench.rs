//! `feiyun bench`: a load generator for any S3 endpoint.

#[derive(clap::Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is being written")
}
