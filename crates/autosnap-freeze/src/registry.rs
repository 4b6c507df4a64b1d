//! What is frozen and which hooks are pending, process-wide, so that the
//! signal thread ([`crate::signals`]) can thaw and run post hooks while the
//! main thread is blocked (in a hung AWS call, for example).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::guard::FrozenSet;
use crate::orchestrate::RunState;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static FROZEN: Mutex<BTreeMap<u64, Weak<FrozenSet>>> = Mutex::new(BTreeMap::new());
static RUNS: Mutex<BTreeMap<u64, Weak<RunState>>> = Mutex::new(BTreeMap::new());

/// Locks a registry even if a thread panicked while holding it: the maps stay
/// valid (every update is a single insert or remove).
fn lock<T>(mutex: &'static Mutex<T>) -> MutexGuard<'static, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes its entry when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Frozen,
    Run,
}

impl Drop for Registration {
    fn drop(&mut self) {
        match self.kind {
            Kind::Frozen => {
                lock(&FROZEN).remove(&self.id);
            }
            Kind::Run => {
                lock(&RUNS).remove(&self.id);
            }
        }
    }
}

pub(crate) fn register_frozen(set: &Arc<FrozenSet>) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&FROZEN).insert(id, Arc::downgrade(set));
    Registration {
        id,
        kind: Kind::Frozen,
    }
}

pub(crate) fn register_run(run: &Arc<RunState>) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&RUNS).insert(id, Arc::downgrade(run));
    Registration {
        id,
        kind: Kind::Run,
    }
}

/// The frozen sets alive now (the registry lock is released before use).
pub(crate) fn frozen_sets() -> Vec<Arc<FrozenSet>> {
    lock(&FROZEN).values().filter_map(Weak::upgrade).collect()
}

/// The `with_frozen` runs in progress now.
pub(crate) fn runs() -> Vec<Arc<RunState>> {
    lock(&RUNS).values().filter_map(Weak::upgrade).collect()
}
