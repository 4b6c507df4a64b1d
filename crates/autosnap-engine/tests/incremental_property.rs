//! The property behind incremental archives: whatever changed between two snapshots of a
//! volume, the archive of the second built on the archive of the first reads exactly the
//! blocks that changed or appeared, records the ones that went, and restores as the second.

mod support;

use std::collections::BTreeMap;

use autosnap_engine::ports::Repo;
use autosnap_engine::{archive_snapshot, restore_to_snapshot, NoProgress, SnapshotTarget};
use proptest::prelude::*;
use support::*;

/// What happens to one block index between the two snapshots.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Absent,
    Kept,
    Changed,
    Removed,
    Added,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        Just(Fate::Absent),
        Just(Fate::Kept),
        Just(Fate::Changed),
        Just(Fate::Removed),
        Just(Fate::Added),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_archive_reads_what_changed_and_restores_the_new_snapshot(
        fates in proptest::collection::vec(fate(), 1..10),
        seed in 0u64..1000,
        concurrency in 1usize..6,
    ) {
        let mut first = BTreeMap::new();
        let mut second = BTreeMap::new();
        for (i, f) in fates.iter().enumerate() {
            let i = i as u64;
            let (old, new) = (block(seed * 100 + i), block(seed * 100 + 50 + i));
            match f {
                Fate::Absent => {}
                Fate::Kept => {
                    first.insert(i, old.clone());
                    second.insert(i, old);
                }
                Fate::Changed => {
                    first.insert(i, old);
                    second.insert(i, new);
                }
                Fate::Removed => {
                    first.insert(i, old);
                }
                Fate::Added => {
                    second.insert(i, new);
                }
            }
        }
        let read = fates.iter().filter(|f| matches!(f, Fate::Changed | Fate::Added)).count();
        let removed = fates.iter().filter(|f| matches!(f, Fate::Removed)).count();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (repo, _backend) = memory_repo();
            let cloud = FakeCloud::default();
            let a = cloud.add_snapshot(Some("vol-1"), 1, first);
            let b = cloud.add_snapshot(Some("vol-1"), 1, second);
            let base = archive_snapshot(&cloud, &cloud, Repo::blocking(&repo), &a, concurrency, &NoProgress)
                .await
                .unwrap();
            let gets = count(&cloud.counts.get_block);
            let report = archive_snapshot(&cloud, &cloud, Repo::blocking(&repo), &b, concurrency, &NoProgress)
                .await
                .unwrap();
            prop_assert_eq!(report.parent.as_deref(), Some(base.archive_id.as_str()));
            prop_assert_eq!(count(&cloud.counts.get_block) - gets, read);
            prop_assert_eq!(report.blocks_read as usize, read);
            prop_assert_eq!(report.blocks_removed as usize, removed);

            let manifest = autosnap_engine::find_archive(&repo, &report.archive_id).unwrap();
            let target = SnapshotTarget::original(&manifest, 0, None);
            let restored = restore_to_snapshot(&cloud, Repo::blocking(&repo), &manifest, &target, concurrency, &NoProgress)
                .await
                .unwrap();
            prop_assert_eq!(cloud.image(&restored.snapshot_id), cloud.image(&b));
            Ok(())
        })?;
    }
}
