//! The ceiling a client can reach against an EBS direct endpoint: N concurrent
//! GetSnapshotBlock or PutSnapshotBlock requests through aws-sdk-ebs and nothing else (no
//! checksum verification on reads, no file writes, no adaptive limit, no retries). The
//! benchmark (`bench/archive/run.sh`) reports autosnap's transfers as a fraction of it.
//!
//! ```sh
//! cargo run --release --example raw_ebs -- get SNAPSHOT [CONCURRENCY]
//! cargo run --release --example raw_ebs -- put IMAGE [CONCURRENCY]
//! ```
//!
//! Credentials, region and endpoint come from the environment (`AWS_ENDPOINT_URL`, …).
//! `get` lists the snapshot's blocks and reads every one, dropping the data. `put` starts a
//! snapshot, sends every non-zero 512 KiB block of IMAGE with its SHA-256 (which EBS
//! requires) and completes it with the linear checksum; it prints the snapshot id. Both print
//! the blocks moved and MiB/s on stderr.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use futures::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

const BLOCK_SIZE: usize = 524_288;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, target) = match (args.first(), args.get(1)) {
        (Some(m), Some(t)) => (m.as_str(), t.clone()),
        _ => {
            return Err(
                "usage: raw_ebs get SNAPSHOT [CONCURRENCY] | put IMAGE [CONCURRENCY]".into(),
            )
        }
    };
    let concurrency: usize = args.get(2).map_or(Ok(16), |c| c.parse())?;
    let conf = aws_config::load_from_env().await;
    let ebs = aws_sdk_ebs::Client::new(&conf);
    let begun = Instant::now();
    let blocks = match mode {
        "get" => get(&ebs, &target, concurrency).await?,
        "put" => put(&ebs, &target, concurrency).await?,
        _ => return Err(format!("unknown mode {mode}").into()),
    };
    let seconds = begun.elapsed().as_secs_f64();
    eprintln!(
        "{mode}: {blocks} blocks in {seconds:.2} s, {:.1} MiB/s of block data (concurrency {concurrency})",
        blocks as f64 * 0.5 / seconds
    );
    Ok(())
}

async fn get(ebs: &aws_sdk_ebs::Client, snapshot: &str, concurrency: usize) -> Result<u64, Error> {
    let mut blocks = Vec::new();
    let mut token = None;
    loop {
        let page = ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot)
            .max_results(10_000)
            .set_next_token(token)
            .send()
            .await?;
        for b in page.blocks() {
            if let (Some(i), Some(t)) = (b.block_index(), b.block_token()) {
                blocks.push((i, t.to_string()));
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let n = blocks.len() as u64;
    stream::iter(blocks)
        .map(|(index, token)| async move {
            let out = ebs
                .get_snapshot_block()
                .snapshot_id(snapshot)
                .block_index(index)
                .block_token(token)
                .send()
                .await?;
            let data = out.block_data.collect().await?.into_bytes();
            if data.len() != BLOCK_SIZE {
                return Err(Error::from(format!("block {index}: {} bytes", data.len())));
            }
            Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(n)
}

async fn put(ebs: &aws_sdk_ebs::Client, image: &str, concurrency: usize) -> Result<u64, Error> {
    let file = Arc::new(std::fs::File::open(image)?);
    let len = file.metadata()?.len();
    let snapshot = ebs
        .start_snapshot()
        .volume_size(len.div_ceil(1 << 30).max(1) as i64)
        .send()
        .await?
        .snapshot_id
        .ok_or("StartSnapshot returned no id")?;
    let digests: Vec<Option<[u8; 32]>> = stream::iter(0..len.div_ceil(BLOCK_SIZE as u64))
        .map(|index| {
            let file = Arc::clone(&file);
            let snapshot = snapshot.clone();
            async move {
                let mut buf = vec![0u8; BLOCK_SIZE];
                let n = file.read_at(&mut buf, index * BLOCK_SIZE as u64)?;
                if n == 0 || buf.iter().all(|&b| b == 0) {
                    return Ok::<_, Error>(None);
                }
                let digest: [u8; 32] = Sha256::digest(&buf).into();
                ebs.put_snapshot_block()
                    .snapshot_id(snapshot)
                    .block_index(index as i32)
                    .data_length(BLOCK_SIZE as i32)
                    .block_data(ByteStream::from(buf))
                    .checksum(aws_smithy_types::base64::encode(digest))
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .send()
                    .await?;
                Ok(Some(digest))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    let mut linear = Sha256::new();
    let mut written = 0u64;
    for d in digests.iter().flatten() {
        linear.update(d);
        written += 1;
    }
    ebs.complete_snapshot()
        .snapshot_id(&snapshot)
        .changed_blocks_count(written as i32)
        .checksum(aws_smithy_types::base64::encode(linear.finalize()))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await?;
    println!("{snapshot}");
    Ok(written)
}
