//! gc racing an archive that deduplicates against the very chunks gc wants to delete, in the
//! orders a scripted backend forces: every schedule with at most two preemptions (exhaustive),
//! then a seeded random sample of schedules. After each: `verify --read-data` passes, every
//! archive that completed restores byte for byte, and the only errors are lock conflicts.

mod common;
mod faults;

use std::sync::{Arc, OnceLock};

use autosnap_repo::{
    Backend, Credentials, EncryptionInit, Error, Manifest, MemoryBackend, Repository, VolumeSource,
};
use common::*;
use faults::Scheduler;

/// Blocks of the archive that races gc: two reuse garbage chunks, one a kept chunk, one is new.
const RACING: [Fill; 4] = [
    Fill::Random(200),
    Fill::Random(201),
    Fill::Random(101),
    Fill::Random(300),
];
const KEPT: [Fill; 2] = [Fill::Random(100), Fill::Random(101)];
const FORGOTTEN: [Fill; 3] = [Fill::Random(200), Fill::Random(201), Fill::Random(202)];

fn blocks() -> &'static Vec<(Fill, Vec<u8>)> {
    static BLOCKS: OnceLock<Vec<(Fill, Vec<u8>)>> = OnceLock::new();
    BLOCKS.get_or_init(|| {
        RACING
            .iter()
            .chain(&KEPT)
            .chain(&FORGOTTEN)
            .map(|f| (*f, block(*f)))
            .collect()
    })
}

fn data(fill: Fill) -> &'static [u8] {
    &blocks().iter().find(|(f, _)| *f == fill).unwrap().1
}

fn archive(repo: &Repository, id: &str, fills: &[Fill]) -> autosnap_repo::Result<Manifest> {
    let mut writer = repo.begin_archive(source(id))?;
    let v = writer.add_volume(VolumeSource::with_size_bytes((fills.len() * BS) as u64))?;
    for (i, fill) in fills.iter().enumerate() {
        writer.add_block(v, i as u64, data(*fill))?;
    }
    writer.finish()
}

/// A repository with one kept archive and the garbage of a forgotten one (built once, copied
/// for every schedule).
fn starting_state() -> (Arc<MemoryBackend>, Manifest) {
    type Objects = Vec<(String, Vec<u8>)>;
    static STATE: OnceLock<(Objects, Manifest)> = OnceLock::new();
    let (objects, kept) = STATE.get_or_init(|| {
        let (memory, repo) = memory_repo(EncryptionInit::None);
        let kept = archive(&repo, "snap-kept", &KEPT).unwrap();
        let forgotten = archive(&repo, "snap-forgotten", &FORGOTTEN).unwrap();
        memory
            .delete(&format!("manifests/{}", forgotten.id))
            .unwrap();
        let objects = memory
            .names()
            .into_iter()
            .map(|name| {
                let data = memory.raw(&name).unwrap();
                (name, data)
            })
            .collect();
        (objects, kept)
    });
    let memory = Arc::new(MemoryBackend::new());
    for (name, data) in objects {
        memory.put_raw(name, data.clone());
    }
    (memory, kept.clone())
}

fn restores(repo: &Repository, manifest: &Manifest, fills: &[Fill]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.img");
    repo.restore_to_file(manifest, 0, &out).unwrap();
    let expected: Vec<u8> = fills.iter().flat_map(|f| data(*f).to_vec()).collect();
    assert!(
        std::fs::read(&out).unwrap() == expected,
        "{} differs",
        manifest.id
    );
}

/// What one schedule produced.
struct Outcome {
    archive: autosnap_repo::Result<Manifest>,
    gc: autosnap_repo::Result<autosnap_repo::GcReport>,
    steps: usize,
}

/// Runs the archive (actor 0) and gc (actor 1) over a copy of the starting state, in the
/// order `choose` picks, and checks the invariants.
fn race(choose: impl FnMut(usize, &[usize]) -> usize) -> Outcome {
    let (memory, kept) = starting_state();
    let scheduler = Scheduler::new(memory.clone(), 2);
    // Each actor opens the repository itself: its reads are steps of the schedule too.
    let open = |i: usize| {
        let backend: Arc<dyn Backend> = scheduler.actor(i);
        Repository::open(backend, Credentials::None)
    };
    let (archive_result, gc_result, log) = std::thread::scope(|s| {
        let sched = &scheduler;
        let archiver = s.spawn(move || {
            let _done = Finish(sched, 0);
            archive(&open(0)?, "snap-racing", &RACING)
        });
        let collector = s.spawn(move || {
            let _done = Finish(sched, 1);
            open(1)?.gc(false)
        });
        let log = scheduler.run(choose);
        (archiver.join().unwrap(), collector.join().unwrap(), log)
    });

    // Only lock conflicts may stop either side.
    for err in [archive_result.as_ref().err(), gc_result.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert!(matches!(err, Error::Locked { .. }), "{err}\n{log:?}");
    }
    let repo = Repository::open(memory.clone(), Credentials::None).unwrap();
    let report = repo.verify(true).unwrap();
    assert!(report.is_ok(), "{report:?}\n{log:?}");
    restores(&repo, &kept, &KEPT);
    if let Ok(manifest) = &archive_result {
        restores(&repo, manifest, &RACING);
    }
    assert!(names(&*memory, "locks/").is_empty(), "{log:?}");
    Outcome {
        archive: archive_result,
        gc: gc_result,
        steps: log.len(),
    }
}

/// Marks an actor finished when its work returns or panics.
struct Finish<'a>(&'a Scheduler, usize);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

/// A schedule that runs `first` until a preemption point in `switches`, then the other actor,
/// and so on (when the current actor is not ready, the other runs without a preemption).
fn preempting(first: usize, switches: Vec<usize>) -> impl FnMut(usize, &[usize]) -> usize {
    let mut current = first;
    move |step, ready| {
        if switches.contains(&step) {
            current = 1 - current;
        }
        ready.iter().position(|a| *a == current).unwrap_or(0)
    }
}

#[test]
fn gc_never_deletes_what_a_racing_archive_reuses() {
    // Both orders without preemption: one side finishes, then the other runs.
    let sequential = race(preempting(0, vec![]));
    assert!(sequential.archive.is_ok() && sequential.gc.is_ok());
    let report = sequential.gc.unwrap();
    assert_eq!(report.chunks_unreferenced, 1, "only Random(202) is garbage");
    let other = race(preempting(1, vec![]));
    assert_eq!(other.gc.unwrap().chunks_unreferenced, 3);
    let steps = sequential.steps.max(other.steps);

    let mut schedules = 0;
    let (mut both, mut archive_only, mut gc_only, mut neither) = (0, 0, 0, 0);
    let mut tally = |outcome: Outcome| {
        schedules += 1;
        match (outcome.archive.is_ok(), outcome.gc.is_ok()) {
            (true, true) => both += 1,
            (true, false) => archive_only += 1,
            (false, true) => gc_only += 1,
            (false, false) => neither += 1,
        }
    };
    // Every schedule with one or two preemptions.
    for first in 0..2 {
        for a in 1..steps {
            tally(race(preempting(first, vec![a])));
            for b in a + 1..steps {
                tally(race(preempting(first, vec![a, b])));
            }
        }
    }
    // A seeded sample of schedules with any number of preemptions.
    let mut state: u64 = 0x5eed_0f9c_2024;
    for _ in 0..300 {
        tally(race(|_, ready| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % ready.len() as u64) as usize
        }));
    }
    // The schedules reached each outcome that mutual exclusion allows.
    assert!(
        both > 0 && archive_only > 0 && gc_only > 0,
        "{both} {archive_only} {gc_only} {neither}"
    );
    eprintln!(
        "{schedules} schedules of up to {steps} steps: both finished {both}, archive only \
         {archive_only}, gc only {gc_only}, neither {neither}"
    );
}
