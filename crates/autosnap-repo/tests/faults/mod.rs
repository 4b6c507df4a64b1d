//! Backends that misbehave on purpose: a hook before and after every operation, a "crash" at
//! operation N, and a scheduler that decides the order of two actors' operations.
#![allow(dead_code)]

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use autosnap_repo::{Backend, BackendError, ObjectInfo};

/// A backend operation, as hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Create,
    Exists,
    List,
    Delete,
}

impl OpKind {
    pub fn writes(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Create)
    }
}

/// What a hook decides before an operation runs.
pub enum Before {
    /// Run it.
    Run,
    /// Fail it without running it.
    Fail(&'static str),
}

/// What a hook decides after an operation ran (successfully or not).
pub enum After {
    /// Return the real result.
    Keep,
    /// The operation took effect, but its answer is lost: return this error instead.
    LoseResponse,
    /// Answer `Ok(false)` to a `create` that did create (a retried request that met its own
    /// first attempt).
    AnswerExisted,
}

type BeforeHook = dyn Fn(OpKind, &str) -> Before + Send + Sync;
type AfterHook = dyn Fn(OpKind, &str) -> After + Send + Sync;

/// A backend whose every operation passes through two hooks.
pub struct Hooked {
    pub inner: Arc<dyn Backend>,
    before: Mutex<Option<Arc<BeforeHook>>>,
    after: Mutex<Option<Arc<AfterHook>>>,
}

impl fmt::Debug for Hooked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Hooked {
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Hooked {
            inner,
            before: Mutex::new(None),
            after: Mutex::new(None),
        })
    }

    pub fn before(&self, hook: impl Fn(OpKind, &str) -> Before + Send + Sync + 'static) {
        *self.before.lock().unwrap() = Some(Arc::new(hook));
    }

    pub fn after(&self, hook: impl Fn(OpKind, &str) -> After + Send + Sync + 'static) {
        *self.after.lock().unwrap() = Some(Arc::new(hook));
    }

    pub fn clear(&self) {
        *self.before.lock().unwrap() = None;
        *self.after.lock().unwrap() = None;
    }

    fn run<T>(
        &self,
        op: OpKind,
        name: &str,
        call: impl FnOnce() -> Result<T, BackendError>,
        existed: impl FnOnce(T) -> T,
    ) -> Result<T, BackendError> {
        let before = self.before.lock().unwrap().clone();
        if let Some(hook) = before {
            if let Before::Fail(why) = hook(op, name) {
                return Err(injected(op, name, why));
            }
        }
        let result = call();
        let after = self.after.lock().unwrap().clone();
        match after.map(|hook| hook(op, name)) {
            None | Some(After::Keep) => result,
            Some(After::LoseResponse) => Err(injected(op, name, "connection reset by peer")),
            Some(After::AnswerExisted) => result.map(existed),
        }
    }
}

pub fn injected(op: OpKind, name: &str, why: &'static str) -> BackendError {
    BackendError::Remote {
        op: match op {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Create => "create",
            OpKind::Exists => "stat",
            OpKind::List => "list",
            OpKind::Delete => "delete",
        },
        name: name.to_owned(),
        source: why.into(),
    }
}

impl Backend for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        self.run(OpKind::Read, name, || self.inner.read(name), |v| v)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.run(OpKind::Write, name, || self.inner.write(name, data), |v| v)
    }
    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.run(
            OpKind::Create,
            name,
            || self.inner.create(name, data),
            |_| false,
        )
    }
    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        self.run(OpKind::Exists, name, || self.inner.exists(name), |v| v)
    }
    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        self.run(
            OpKind::List,
            prefix,
            || self.inner.list(prefix, visit),
            |v| v,
        )
    }
    fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.run(OpKind::Delete, name, || self.inner.delete(name), |v| v)
    }
    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<u64, BackendError> {
        self.inner.remove_stale_temporaries(older_than)
    }
}

// ---------------------------------------------------------------------------------------------
// Crash at operation N
// ---------------------------------------------------------------------------------------------

/// A process that dies at its `crash_at`-th backend operation (0-based): that operation and
/// every later one fail. A write in flight at the crash leaves a torn temp file beside its
/// target in the local directory `root` (what a killed process leaves there).
#[derive(Debug)]
pub struct Crashing {
    inner: Arc<dyn Backend>,
    root: Option<PathBuf>,
    crash_at: Option<u64>,
    ops: AtomicU64,
}

impl Crashing {
    pub fn new(inner: Arc<dyn Backend>, root: Option<PathBuf>, crash_at: Option<u64>) -> Self {
        Crashing {
            inner,
            root,
            crash_at,
            ops: AtomicU64::new(0),
        }
    }

    /// Operations attempted so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    pub fn crashed(&self) -> bool {
        self.crash_at.is_some_and(|n| self.ops() > n)
    }

    fn step(&self, op: OpKind, name: &str, data: Option<&[u8]>) -> Result<(), BackendError> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        let Some(crash_at) = self.crash_at else {
            return Ok(());
        };
        if n < crash_at {
            return Ok(());
        }
        if n == crash_at {
            if let (Some(root), Some(data)) = (&self.root, data) {
                // The torn write: half the bytes in a temp file the backend never renamed.
                let path = root.join(name);
                let dir = path.parent().unwrap();
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::write(
                    dir.join(format!(".tmp-crash{n:08}")),
                    &data[..data.len() / 2],
                );
            }
        }
        Err(injected(op, name, "process killed"))
    }
}

impl Backend for Crashing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        self.step(OpKind::Read, name, None)?;
        self.inner.read(name)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.step(OpKind::Write, name, Some(data))?;
        self.inner.write(name, data)
    }
    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.step(OpKind::Create, name, Some(data))?;
        self.inner.create(name, data)
    }
    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        self.step(OpKind::Exists, name, None)?;
        self.inner.exists(name)
    }
    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        self.step(OpKind::List, prefix, None)?;
        self.inner.list(prefix, visit)
    }
    fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.step(OpKind::Delete, name, None)?;
        self.inner.delete(name)
    }
    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<u64, BackendError> {
        if self.crashed() {
            return Err(injected(OpKind::Delete, "", "process killed"));
        }
        self.inner.remove_stale_temporaries(older_than)
    }
}

// ---------------------------------------------------------------------------------------------
// Two actors, one order
// ---------------------------------------------------------------------------------------------

/// Lets a test decide, operation by operation, which of several actors (threads) runs its
/// next backend operation. Each actor sees its own [`Actor`] backend; an operation waits until
/// the scheduler grants that actor a turn, runs, then hands control back.
#[derive(Debug)]
pub struct Scheduler {
    inner: Arc<dyn Backend>,
    state: Mutex<SchedState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SchedState {
    /// Actor allowed to run one operation now.
    turn: Option<usize>,
    /// Actors waiting with an operation, by index.
    waiting: Vec<bool>,
    /// Actors that finished.
    done: Vec<bool>,
    /// Operations run, as (actor, op, name).
    log: Vec<(usize, OpKind, String)>,
}

impl Scheduler {
    pub fn new(inner: Arc<dyn Backend>, actors: usize) -> Arc<Self> {
        Arc::new(Scheduler {
            inner,
            state: Mutex::new(SchedState {
                turn: None,
                waiting: vec![false; actors],
                done: vec![false; actors],
                log: Vec::new(),
            }),
            changed: Condvar::new(),
        })
    }

    /// The backend actor `index` uses.
    pub fn actor(self: &Arc<Self>, index: usize) -> Arc<Actor> {
        Arc::new(Actor {
            scheduler: self.clone(),
            index,
        })
    }

    /// Marks actor `index` finished (call when its thread's work returns).
    pub fn finish(&self, index: usize) {
        let mut state = self.state.lock().unwrap();
        state.done[index] = true;
        self.changed.notify_all();
    }

    /// Runs the actors to completion, choosing at each step with `choose(step, ready)` among
    /// the actors that wait with an operation. Returns the log of operations.
    pub fn run(
        &self,
        mut choose: impl FnMut(usize, &[usize]) -> usize,
    ) -> Vec<(usize, OpKind, String)> {
        let mut step = 0;
        let mut state = self.state.lock().unwrap();
        loop {
            // Wait until every live actor is either waiting or done (a quiescent point).
            while state.turn.is_some()
                || (0..state.waiting.len()).any(|i| !state.waiting[i] && !state.done[i])
            {
                state = self.changed.wait(state).unwrap();
            }
            let ready: Vec<usize> = (0..state.waiting.len())
                .filter(|&i| state.waiting[i])
                .collect();
            if ready.is_empty() {
                return std::mem::take(&mut state.log);
            }
            let chosen = ready[choose(step, &ready) % ready.len()];
            step += 1;
            state.waiting[chosen] = false;
            state.turn = Some(chosen);
            self.changed.notify_all();
        }
    }

    fn op<T>(&self, index: usize, op: OpKind, name: &str, call: impl FnOnce() -> T) -> T {
        let mut state = self.state.lock().unwrap();
        state.waiting[index] = true;
        self.changed.notify_all();
        while state.turn != Some(index) {
            state = self.changed.wait(state).unwrap();
        }
        drop(state);
        let result = call();
        let mut state = self.state.lock().unwrap();
        state.log.push((index, op, name.to_owned()));
        state.turn = None;
        self.changed.notify_all();
        result
    }
}

/// One actor's view of a [`Scheduler`]'s backend.
#[derive(Debug)]
pub struct Actor {
    scheduler: Arc<Scheduler>,
    index: usize,
}

impl Backend for Actor {
    fn location(&self) -> String {
        self.scheduler.inner.location()
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        let inner = &self.scheduler.inner;
        self.scheduler
            .op(self.index, OpKind::Read, name, || inner.read(name))
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        let inner = &self.scheduler.inner;
        self.scheduler
            .op(self.index, OpKind::Write, name, || inner.write(name, data))
    }
    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        let inner = &self.scheduler.inner;
        self.scheduler.op(self.index, OpKind::Create, name, || {
            inner.create(name, data)
        })
    }
    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        let inner = &self.scheduler.inner;
        self.scheduler
            .op(self.index, OpKind::Exists, name, || inner.exists(name))
    }
    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        // The listing is one step; the visitor runs after it (it may call back in).
        let inner = &self.scheduler.inner;
        let found = self.scheduler.op(self.index, OpKind::List, prefix, || {
            autosnap_repo::backend::list_sorted(&**inner, prefix)
        })?;
        found.into_iter().try_for_each(visit)
    }
    fn delete(&self, name: &str) -> Result<(), BackendError> {
        let inner = &self.scheduler.inner;
        self.scheduler
            .op(self.index, OpKind::Delete, name, || inner.delete(name))
    }
}
