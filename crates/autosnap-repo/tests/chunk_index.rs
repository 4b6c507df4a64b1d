//! The chunk index an archive lists under its lock: a known chunk costs no request, a new one
//! a single create; gc cannot run under it; a chunk gc deleted, or a damaged object under a
//! chunk's name, is stored again.

mod common;

use autosnap_repo::{ArchiveReader, BlockRef, EncryptionInit, Error, ListBudget, VolumeSource};
use common::*;

/// An archive of one block with `fill`, finished.
fn archive_one(repo: &autosnap_repo::Repository, fill: Fill) {
    let mut writer = repo.begin_archive(source("snap-1")).unwrap();
    let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    writer.add_block(volume, 0, &block(fill)).unwrap();
    writer.finish().unwrap();
}

#[test]
fn a_known_chunk_costs_no_request_and_a_new_one_no_head() {
    for encryption in [EncryptionInit::None, passphrase("pw")] {
        let (backend, repo) = memory_repo(encryption);
        archive_one(&repo, Fill::Random(1));

        let mut writer = repo.begin_archive(source("snap-2")).unwrap();
        assert!(writer.load_chunk_index(ListBudget::for_blocks(4)).unwrap());
        assert_eq!(writer.indexed_chunks(), Some(1));
        let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
        let (heads, writes) = (backend.exists_checks(), backend.writes());

        let known = writer
            .add_block(volume, 0, &block(Fill::Random(1)))
            .unwrap();
        assert!(!known.new);
        assert_eq!(
            backend.exists_checks(),
            heads,
            "a known chunk is not asked for"
        );
        assert_eq!(backend.writes(), writes, "nor written");

        let new = writer
            .add_block(volume, 1, &block(Fill::Random(2)))
            .unwrap();
        assert!(new.new);
        assert_eq!(
            backend.exists_checks(),
            heads,
            "a new chunk is not asked for"
        );
        assert_eq!(backend.writes(), writes + 1, "it is one create");

        // Stored by this archive: known from now on.
        let again = writer
            .add_block(volume, 2, &block(Fill::Random(2)))
            .unwrap();
        assert!(!again.new);
        assert_eq!(backend.writes(), writes + 1);
        let manifest = writer.finish().unwrap();
        assert_eq!(manifest.stats.new_chunks, 1);
        assert_eq!(manifest.stats.reused_chunks, 2);
        assert!(repo.verify(true).unwrap().is_ok());
    }
}

#[test]
fn without_an_index_each_chunk_is_asked_for() {
    let (backend, repo) = memory_repo(EncryptionInit::None);
    archive_one(&repo, Fill::Random(1));
    let mut writer = repo.begin_archive(source("snap-2")).unwrap();
    let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    let heads = backend.exists_checks();
    assert!(
        !writer
            .add_block(volume, 0, &block(Fill::Random(1)))
            .unwrap()
            .new
    );
    assert!(
        writer
            .add_block(volume, 1, &block(Fill::Random(2)))
            .unwrap()
            .new
    );
    assert_eq!(backend.exists_checks(), heads + 2);
    // A budget the repository exceeds leaves the writer without an index, as before.
    let budget = ListBudget { max_entries: 1 };
    assert!(!writer.load_chunk_index(budget).unwrap());
    assert_eq!(writer.indexed_chunks(), None);
    assert!(
        !writer
            .add_block(volume, 2, &block(Fill::Random(2)))
            .unwrap()
            .new
    );
    assert_eq!(backend.exists_checks(), heads + 3);
    writer.finish().unwrap();
}

#[test]
fn gc_cannot_run_while_an_indexed_archive_holds_its_lock() {
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let mut writer = repo.begin_archive(source("snap-1")).unwrap();
    writer.load_chunk_index(ListBudget::for_blocks(4)).unwrap();
    match repo.gc(false) {
        Err(Error::Locked { .. }) => {}
        other => panic!("gc ran beside an archive: {other:?}"),
    }
    let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    writer
        .add_block(volume, 0, &block(Fill::Random(1)))
        .unwrap();
    writer.finish().unwrap();
}

#[test]
fn a_chunk_gc_deleted_is_stored_again_by_the_next_archive() {
    let (backend, repo) = memory_repo(EncryptionInit::None);
    // An archive that stores a chunk and is abandoned: the chunk is garbage.
    {
        let mut writer = repo.begin_archive(source("snap-1")).unwrap();
        writer.load_chunk_index(ListBudget::for_blocks(4)).unwrap();
        let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
        assert!(
            writer
                .add_block(volume, 0, &block(Fill::Random(1)))
                .unwrap()
                .new
        );
    }
    assert_eq!(names(&*backend, "chunks/").len(), 1);
    let report = repo.gc(false).unwrap();
    assert_eq!(report.chunks_unreferenced, 1);
    assert_eq!(report.deleted, 1);
    assert!(names(&*backend, "chunks/").is_empty());

    // The next archive lists afresh: the chunk is not known, and is stored again.
    let mut writer = repo.begin_archive(source("snap-2")).unwrap();
    writer.load_chunk_index(ListBudget::for_blocks(4)).unwrap();
    assert_eq!(writer.indexed_chunks(), Some(0));
    let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    assert!(
        writer
            .add_block(volume, 0, &block(Fill::Random(1)))
            .unwrap()
            .new
    );
    let manifest = writer.finish().unwrap();
    assert!(repo.verify(true).unwrap().is_ok());
    assert_eq!(block_zero(&repo, manifest), block(Fill::Random(1)));
}

#[test]
fn a_damaged_object_under_a_chunks_name_is_replaced_not_reused() {
    for encryption in [EncryptionInit::None, passphrase("pw")] {
        let (backend, repo) = memory_repo(encryption);
        archive_one(&repo, Fill::Random(1));
        let name = names(&*backend, "chunks/").pop().unwrap();
        // Torn (empty) or planted larger than any chunk: the listing shows it.
        for planted in [Vec::new(), vec![0u8; BS + 100]] {
            backend.put_raw(&name, planted);
            assert!(!repo.verify(true).unwrap().is_ok());

            let mut writer = repo.begin_archive(source("snap-2")).unwrap();
            writer.load_chunk_index(ListBudget::for_blocks(4)).unwrap();
            assert_eq!(writer.indexed_chunks(), Some(0));
            let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
            let added = writer
                .add_block(volume, 0, &block(Fill::Random(1)))
                .unwrap();
            assert!(added.new, "stored again over the damaged object");
            let manifest = writer.finish().unwrap();
            assert!(repo.verify(true).unwrap().is_ok());
            assert_eq!(block_zero(&repo, manifest), block(Fill::Random(1)));
        }
    }
}

/// The content of block 0 of the archive's only volume, read back.
fn block_zero(repo: &autosnap_repo::Repository, manifest: autosnap_repo::Manifest) -> Vec<u8> {
    let reader = ArchiveReader::new(repo, manifest);
    let (index, block) = reader.blocks(0).unwrap().next().unwrap().unwrap();
    assert_eq!(index, 0);
    assert!(matches!(block, BlockRef::Chunk(_)));
    reader.read_block(&block).unwrap()
}

/// Records the order of creates, deferred creates and directory syncs over a memory backend.
#[derive(Debug, Default)]
struct Recording {
    inner: autosnap_repo::MemoryBackend,
    log: std::sync::Mutex<Vec<String>>,
}

impl autosnap_repo::Backend for Recording {
    fn location(&self) -> String {
        "recording".into()
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, autosnap_repo::BackendError> {
        self.inner.read(name)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), autosnap_repo::BackendError> {
        self.inner.write(name, data)
    }
    fn create(&self, name: &str, data: &[u8]) -> Result<bool, autosnap_repo::BackendError> {
        self.log.lock().unwrap().push(format!("create {name}"));
        self.inner.create(name, data)
    }
    fn create_deferred(
        &self,
        name: &str,
        data: &[u8],
    ) -> Result<bool, autosnap_repo::BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("create_deferred {name}"));
        self.inner.create(name, data)
    }
    fn sync_dirs(&self, dirs: &[String]) -> Result<(), autosnap_repo::BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("sync_dirs {}", dirs.join(" ")));
        Ok(())
    }
    fn exists(&self, name: &str) -> Result<bool, autosnap_repo::BackendError> {
        self.inner.exists(name)
    }
    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(autosnap_repo::ObjectInfo) -> Result<(), autosnap_repo::BackendError>,
    ) -> Result<(), autosnap_repo::BackendError> {
        self.inner.list(prefix, visit)
    }
    fn delete(&self, name: &str) -> Result<(), autosnap_repo::BackendError> {
        self.inner.delete(name)
    }
}

#[test]
fn chunk_directories_are_synced_once_before_the_manifest() {
    let backend = std::sync::Arc::new(Recording::default());
    let repo =
        autosnap_repo::Repository::init(backend.clone(), options(EncryptionInit::None)).unwrap();
    archive_one(&repo, Fill::Random(1));
    let mut writer = repo.begin_archive(source("snap-2")).unwrap();
    let volume = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    writer
        .add_block(volume, 0, &block(Fill::Random(1)))
        .unwrap(); // reused
    writer
        .add_block(volume, 1, &block(Fill::Random(2)))
        .unwrap(); // new
    writer.add_block(volume, 2, &block(Fill::Zero)).unwrap();
    let start = backend.log.lock().unwrap().len();
    writer.finish().unwrap();
    let log = backend.log.lock().unwrap()[start..].to_vec();

    let chunks = names(&*backend, "chunks/");
    let mut dirs: Vec<String> = chunks
        .iter()
        .map(|n| n.rsplit_once('/').unwrap().0.to_owned())
        .collect();
    dirs.sort();
    dirs.dedup();
    // Both chunks' directories (the reused one too: its name must be durable before a
    // manifest that needs it), once, before the manifest.
    let sync = log
        .iter()
        .position(|l| l == &format!("sync_dirs {}", dirs.join(" ")));
    let manifest = log.iter().position(|l| l.starts_with("create manifests/"));
    assert!(
        matches!((sync, manifest), (Some(s), Some(m)) if s < m),
        "{log:#?}"
    );
    assert_eq!(log.iter().filter(|l| l.starts_with("sync_dirs")).count(), 1);
}
