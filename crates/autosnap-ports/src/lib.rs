//! What autosnap's archive engine (`autosnap-engine`) needs from AWS, as traits and data types,
//! and the block buffers both sides use. The AWS adapters (`autosnap-aws`) implement the traits
//! and depend on this crate only, not on the engine: a change to a workflow rebuilds the engine
//! and the CLI, not the SDK crate.

pub mod buffers;
pub mod ports;

pub use buffers::{block_sha256, BlockBuffers, LinearChecksum};
pub use ports::*;

use futures::stream::{self, StreamExt, TryStreamExt};

/// The stream of a snapshot's blocks, page by page to the end (pages may be empty and still
/// carry a token). `first` is the already-fetched first page.
pub fn block_stream<'a, S: BlockSource>(
    source: &'a S,
    snapshot: &'a str,
    first: BlockPage,
) -> impl futures::Stream<Item = Result<BlockEntry, RemoteError>> + Send + 'a {
    let first_blocks = first.blocks;
    let rest = stream::try_unfold(first.next_token, move |token| async move {
        match token {
            None => Ok::<_, RemoteError>(None),
            Some(t) => {
                let page = source.list_blocks(snapshot, Some(t)).await?;
                Ok(Some((page.blocks, page.next_token)))
            }
        }
    });
    stream::once(async move { Ok::<_, RemoteError>(first_blocks) })
        .chain(rest)
        .map_ok(|blocks| stream::iter(blocks.into_iter().map(Ok)))
        .try_flatten()
}
