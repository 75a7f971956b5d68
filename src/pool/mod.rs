//! [`Pool`]: Python's `multiprocessing.Pool` — worker processes forked at start, fed
//! chunks of items over shmproc's own queues, surviving the death of a worker.
//!
//! | Python | shmproc |
//! |---|---|
//! | `Pool(processes, initializer, maxtasksperchild)` | [`Pool::new`], [`Pool::builder`] |
//! | `map(f, iterable, chunksize)` | [`Pool::map`], [`Pool::map_chunked`] |
//! | `map_async` → `AsyncResult.get/wait/ready/successful` | [`Pool::map_async`] → [`AsyncResult`] |
//! | `imap`, `imap_unordered` | [`Pool::imap`], [`Pool::imap_unordered`] (lazy, bounded) |
//! | `apply`, `apply_async` | [`Pool::apply`], [`Pool::apply_async`] |
//! | `starmap`, `starmap_async` (pairs) | [`Pool::starmap`], [`Pool::starmap_async_chunked`] |
//! | any picklable value | `map_serde`, `map_serde_async_chunked`, `apply_serde` (feature `serde`, postcard) |
//! | `close`, `terminate`, `join`, `with Pool(...)` | [`Pool::close`], [`Pool::terminate`], [`Pool::join`], `Drop` |
//! | `multiprocessing.TimeoutError` | [`PoolError::Timeout`] |
//!
//! # How it works
//!
//! Each worker has a task queue of its own (a [`ByteQueue`](crate::ByteQueue));
//! all of them put to one result queue. The parent keeps up to two tasks queued at
//! each worker and the rest pending in its own memory. A task carries a chunk of
//! plain-old-data items and the function to run as two code addresses — fork keeps
//! the address space, so a worker can call any `fn` item or non-capturing closure of
//! the program — authenticated by a MAC under a key only the parent and its workers
//! hold in private memory (see the [`task`] module docs): a process scribbling on
//! the queues cannot make a worker jump to an address of its choosing.
//!
//! Progress is made by the calls that wait for results ([`AsyncResult::get`],
//! [`Pool::map`], the [`IMap`] iterators, [`Pool::join`]): they move pending tasks
//! to workers, collect results and check the workers. Without such a call at most
//! two tasks per worker run (there is no background thread).
//!
//! # Failure model
//!
//! - A panic in a task fails that chunk with [`PoolError::Panicked`] (message and
//!   worker pid); the worker carries on.
//! - A worker that dies (SIGKILL, or any exit) is noticed within about 20 ms by a
//!   waiting call: the task it was running — named by its line in a claim table in
//!   shared memory, written before the task starts — fails with
//!   [`PoolError::WorkerDied`] (pid and exit status); tasks it had queued but not
//!   started run elsewhere; a replacement is forked into its slot. A worker killed
//!   between taking a task and recording its claim (a few instructions) has not
//!   run it: that task simply runs again. A task whose result was published at the
//!   very instant of the death may be reported failed.
//! - The parent killed: workers get SIGKILL from the kernel (`PR_SET_PDEATHSIG`),
//!   and the pool's segments are anonymous (memfd), gone with the last mapping.
//!   (The death signal follows the *thread* that forked a worker, so one thread of
//!   the pool, living as long as the pool, forks every worker.)
//!
//! The fork caveat of [`Process`](crate::Process) applies to workers: they start
//! with only the forking thread; a lock another thread held at that moment stays
//! held in the worker.

mod claims;
mod error;
mod forker;
mod parent;
pub mod task;
mod worker;

pub(crate) use claims::Claims;
pub use error::PoolError;

use bytemuck::Pod;
use parent::{Chunks, Config, Inner, Outcome, State};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most worker processes a pool may have.
pub const MAX_PROCESSES: usize = 1024;

/// Chunks an [`IMap`] keeps in flight per worker process.
pub const IMAP_CHUNKS_PER_PROCESS: usize = 4;

/// A pool of worker processes, like Python's `multiprocessing.Pool` with the `fork`
/// start method.
///
/// Functions are `fn` items or non-capturing closures (`fn(T) -> R`); items and
/// results are plain-old-data ([`bytemuck::Pod`]), copied without serialization.
///
/// # Examples
///
/// ```
/// use shmproc::Pool;
/// # fn main() -> Result<(), shmproc::PoolError> {
/// let pool = Pool::new(2)?;
/// let squares = pool.map(|x: u64| x * x, 0..10)?;
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// let pids = pool.map(|_: u32| std::process::id(), 0..4)?;
/// assert!(pids.iter().all(|&p| p != std::process::id()));
/// let sum: u64 = pool.imap(|x: u64| x + 1, 0..100)?.map(|r| r.unwrap()).sum();
/// assert_eq!(sum, 5050);
/// pool.close();
/// pool.join()?;
/// # Ok(()) }
/// ```
pub struct Pool {
    inner: Mutex<Inner>,
    processes: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lock().fmt(f)
    }
}

/// Options for a [`Pool`]: [`Pool::builder`].
#[derive(Clone, Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<fn()>,
    maxtasksperchild: Option<usize>,
    method: crate::start::StartMethod,
    retries: u32,
}

impl PoolBuilder {
    /// The number of worker processes (default: the available parallelism).
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = Some(n);
        self
    }

    /// How workers are started (Python's `Pool(context=get_context(method))`):
    /// [`Fork`](crate::start::StartMethod::Fork) by default. With
    /// [`Spawn`](crate::start::StartMethod::Spawn) or
    /// [`Forkserver`](crate::start::StartMethod::Forkserver) the pool is safe to
    /// create in a multithreaded program; `main` must call
    /// [`start::init`](crate::start::init) first. Task functions, the initializer
    /// and the pool's key travel to the workers as described in [`crate::start`].
    pub fn start_method(mut self, method: crate::start::StartMethod) -> PoolBuilder {
        self.method = method;
        self
    }

    /// A function each worker runs once, before its first task. If it panics, the
    /// pool runs nothing: every task fails with [`PoolError::Initializer`].
    pub fn initializer(mut self, f: fn()) -> PoolBuilder {
        self.initializer = Some(f);
        self
    }

    /// A worker exits after this many tasks (chunks) and a fresh one replaces it.
    pub fn maxtasksperchild(mut self, n: usize) -> PoolBuilder {
        self.maxtasksperchild = Some(n);
        self
    }

    /// How many times a task whose worker died while running it (SIGKILL, the OOM
    /// killer, an abort) is run again, on another worker, before its result is
    /// [`PoolError::WorkerDied`]. Default 0: Python's `ProcessPoolExecutor` gives up
    /// at once too. A task that panics is not retried: the panic is its result. Only
    /// retry tasks that may run twice (a killed worker may have done part of the work).
    pub fn retries(mut self, n: u32) -> PoolBuilder {
        self.retries = n;
        self
    }

    /// Forks the workers.
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidArgument`] for 0 or more than [`MAX_PROCESSES`]
    /// processes, or a maxtasksperchild of 0; [`PoolError::Os`] if `fork` fails;
    /// [`PoolError::Queue`] if the queues cannot be made.
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = match self.processes {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if processes == 0 {
            return Err(PoolError::InvalidArgument(
                "a pool needs at least 1 process (asked for 0)".to_string(),
            ));
        }
        if processes > MAX_PROCESSES {
            return Err(PoolError::InvalidArgument(format!(
                "a pool has at most {MAX_PROCESSES} processes (asked for {processes})"
            )));
        }
        if self.maxtasksperchild == Some(0) {
            return Err(PoolError::InvalidArgument(
                "maxtasksperchild must be at least 1 (asked for 0)".to_string(),
            ));
        }
        let inner = Inner::start(Config {
            processes,
            initializer: self.initializer,
            maxtasks: self.maxtasksperchild,
            method: self.method,
            retries: self.retries,
        })?;
        Ok(Pool {
            inner: Mutex::new(inner),
            processes,
        })
    }
}

/// The chunksize Python's `map` picks: ceil(len / (4 × processes)), at least 1.
fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(4 * processes).max(1)
}

/// A chunksize for items of `item` bytes and results of `result` bytes, cut to
/// what a message holds.
fn chunk_for(chunksize: usize, item: usize, result: usize) -> Result<usize, PoolError> {
    if chunksize == 0 {
        return Err(PoolError::InvalidArgument(
            "chunksize must be at least 1 (asked for 0)".to_string(),
        ));
    }
    let max = parent::max_chunk(item, result).ok_or_else(|| {
        PoolError::InvalidArgument(format!(
            "items of {item} bytes and results of {result} bytes: a task message holds at most {} bytes",
            parent::MAX_MESSAGE - task::TASK_HEADER
        ))
    })?;
    Ok(chunksize.min(max))
}

/// Decodes every chunk of a map, in order.
fn decode_map<R: Pod>(chunks: Chunks) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.1).sum());
    for (bytes, count) in chunks {
        task::decode_items(&bytes, count, &mut out).map_err(PoolError::Corrupt)?;
    }
    Ok(out)
}

/// Decodes every chunk of a serde map, in order.
#[cfg(feature = "serde")]
fn decode_serde_map<R: serde::de::DeserializeOwned>(chunks: Chunks) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.1).sum());
    for (bytes, count) in chunks {
        match task::decode_serde::<R>(&bytes, count) {
            Ok(values) => out.extend(values),
            Err(task::Refused::Corrupt(why)) => return Err(PoolError::Corrupt(why)),
            Err(task::Refused::Encoding(why)) => return Err(PoolError::Encoding(why)),
        }
    }
    Ok(out)
}

/// Decodes the one result of an apply.
fn decode_one<R: Pod>(chunks: Chunks) -> Result<R, PoolError> {
    decode_map(chunks)?
        .into_iter()
        .next()
        .ok_or_else(|| PoolError::Corrupt("an apply without a result".to_string()))
}

impl Pool {
    /// Forks `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// Options: processes, initializer, maxtasksperchild.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers now running (replacements change them).
    pub fn pids(&self) -> Vec<u32> {
        self.lock().pids()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes progress until `done` says so, or the deadline passes.
    fn wait_for(
        &self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut Inner) -> bool,
    ) -> Result<(), PoolError> {
        loop {
            let mut inner = self.lock();
            if done(&mut inner) {
                return Ok(());
            }
            let wait = match deadline {
                None => Duration::from_millis(20),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(PoolError::Timeout);
                    }
                    left.min(Duration::from_millis(20))
                }
            };
            inner.pump(wait)?;
        }
    }

    /// Submits a job of the chunks `bodies`, in order.
    fn submit_chunks<'a>(
        &self,
        bodies: impl IntoIterator<Item = task::Body<'a>>,
    ) -> Result<u64, PoolError> {
        let mut inner = self.lock();
        let job = inner.new_job(true)?;
        for (i, body) in bodies.into_iter().enumerate() {
            if let Err(e) = inner.submit(job, i, &body) {
                inner.drop_job(job);
                return Err(e);
            }
        }
        inner.pump(Duration::ZERO)?;
        Ok(job)
    }

    /// Submits a map job of plain-old-data.
    fn submit_map<T: Pod, R: Pod>(
        &self,
        func: fn(T) -> R,
        items: Vec<T>,
        chunksize: usize,
    ) -> Result<u64, PoolError> {
        let chunksize = chunk_for(chunksize, size_of::<T>(), size_of::<R>())?;
        self.submit_chunks(items.chunks(chunksize).map(|c| task::Body::pod(func, c)))
    }

    /// Python's `map`: `func` over `items` in the workers, results in input order,
    /// with the default chunksize (ceil(len / (4 × processes))).
    ///
    /// # Errors
    ///
    /// The first failed chunk's error in input order, after every chunk finished:
    /// [`PoolError::Panicked`], [`PoolError::WorkerDied`], …; [`PoolError::Closed`]
    /// on a closed pool.
    pub fn map<T: Pod, R: Pod>(
        &self,
        func: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_async(func, items)?.get()
    }

    /// [`map`](Pool::map) with chunks of `chunksize` items.
    ///
    /// # Errors
    ///
    /// As for [`map`](Pool::map); [`PoolError::InvalidArgument`] for a chunksize
    /// of 0.
    pub fn map_chunked<T: Pod, R: Pod>(
        &self,
        func: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError> {
        self.map_async_chunked(func, items, chunksize)?.get()
    }

    /// Python's `map_async`: submits the map and returns a handle to its result.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] on a closed pool.
    pub fn map_async<T: Pod, R: Pod>(
        &self,
        func: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
    ) -> Result<AsyncResult<'_, Vec<R>>, PoolError> {
        let items: Vec<T> = items.into_iter().collect();
        let chunksize = default_chunksize(items.len(), self.processes);
        self.map_async_chunked(func, items, chunksize)
    }

    /// [`map_async`](Pool::map_async) with chunks of `chunksize` items.
    ///
    /// # Errors
    ///
    /// As for [`map_async`](Pool::map_async); [`PoolError::InvalidArgument`] for a
    /// chunksize of 0.
    pub fn map_async_chunked<T: Pod, R: Pod>(
        &self,
        func: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<AsyncResult<'_, Vec<R>>, PoolError> {
        let job = self.submit_map(func, items.into_iter().collect(), chunksize)?;
        Ok(AsyncResult {
            pool: self,
            job,
            decode: decode_map::<R>,
        })
    }

    /// Python's `apply`: `func(arg)` in a worker.
    ///
    /// # Errors
    ///
    /// As for [`map`](Pool::map).
    pub fn apply<T: Pod, R: Pod>(&self, func: fn(T) -> R, arg: T) -> Result<R, PoolError> {
        self.apply_async(func, arg)?.get()
    }

    /// Python's `apply_async`: submits `func(arg)` and returns a handle to its
    /// result.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] on a closed pool; [`PoolError::InvalidArgument`] for a
    /// type too large for a message.
    pub fn apply_async<T: Pod, R: Pod>(
        &self,
        func: fn(T) -> R,
        arg: T,
    ) -> Result<AsyncResult<'_, R>, PoolError> {
        let job = self.submit_map(func, vec![arg], 1)?;
        Ok(AsyncResult {
            pool: self,
            job,
            decode: decode_one::<R>,
        })
    }

    /// Python's `starmap` for pairs: `func(a, b)` for each `(a, b)` of `items`, in
    /// input order, with the default chunksize.
    ///
    /// # Errors
    ///
    /// As for [`map`](Pool::map).
    pub fn starmap<A: Pod, B: Pod, R: Pod>(
        &self,
        func: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, PoolError> {
        let items: Vec<(A, B)> = items.into_iter().collect();
        let chunksize = default_chunksize(items.len(), self.processes);
        self.starmap_async_chunked(func, items, chunksize)?.get()
    }

    /// [`starmap`](Pool::starmap) with chunks of `chunksize` pairs, as a handle
    /// (Python's `starmap_async`).
    ///
    /// # Errors
    ///
    /// As for [`map_async_chunked`](Pool::map_async_chunked).
    pub fn starmap_async_chunked<A: Pod, B: Pod, R: Pod>(
        &self,
        func: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: usize,
    ) -> Result<AsyncResult<'_, Vec<R>>, PoolError> {
        let items: Vec<(A, B)> = items.into_iter().collect();
        let chunksize = chunk_for(chunksize, size_of::<A>() + size_of::<B>(), size_of::<R>())?;
        let chunks: Vec<(usize, Vec<u8>)> = items
            .chunks(chunksize)
            .map(|c| (c.len(), task::pair_bytes(c)))
            .collect();
        let job = self.submit_chunks(
            chunks
                .iter()
                .map(|(n, bytes)| task::Body::pairs(func, *n, bytes)),
        )?;
        Ok(AsyncResult {
            pool: self,
            job,
            decode: decode_map::<R>,
        })
    }

    /// [`map`](Pool::map) for any serde values (encoded with postcard), with the
    /// default chunksize (feature `serde`).
    ///
    /// # Errors
    ///
    /// As for [`map`](Pool::map); [`PoolError::Encoding`] if an item cannot be
    /// encoded here (before anything runs) or a value cannot be decoded or encoded
    /// in the worker; [`PoolError::InvalidArgument`] if a chunk encodes to more than
    /// a task message holds (use a smaller chunksize).
    #[cfg(feature = "serde")]
    pub fn map_serde<T, R>(
        &self,
        func: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, PoolError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        let items: Vec<T> = items.into_iter().collect();
        let chunksize = default_chunksize(items.len(), self.processes);
        self.map_serde_async_chunked(func, items, chunksize)?.get()
    }

    /// [`map_serde`](Pool::map_serde) with chunks of `chunksize` items, as a
    /// handle (feature `serde`).
    ///
    /// # Errors
    ///
    /// As for [`map_serde`](Pool::map_serde); [`PoolError::InvalidArgument`] for a
    /// chunksize of 0.
    #[cfg(feature = "serde")]
    pub fn map_serde_async_chunked<T, R>(
        &self,
        func: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<AsyncResult<'_, Vec<R>>, PoolError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        let items: Vec<T> = items.into_iter().collect();
        let chunksize = chunk_for(chunksize, 0, 0)?;
        let chunks = items
            .chunks(chunksize)
            .map(|c| task::serde_bytes(c).map(|bytes| (c.len(), bytes)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(PoolError::Encoding)?;
        let job = self.submit_chunks(
            chunks
                .iter()
                .map(|(n, bytes)| task::Body::serde(func, *n, bytes)),
        )?;
        Ok(AsyncResult {
            pool: self,
            job,
            decode: decode_serde_map::<R>,
        })
    }

    /// [`apply`](Pool::apply) for serde values (feature `serde`).
    ///
    /// # Errors
    ///
    /// As for [`map_serde`](Pool::map_serde).
    #[cfg(feature = "serde")]
    pub fn apply_serde<T, R>(&self, func: fn(T) -> R, arg: T) -> Result<R, PoolError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.map_serde_async_chunked(func, [arg], 1)?
            .get()?
            .pop()
            .ok_or_else(|| PoolError::Corrupt("an apply without a result".to_string()))
    }

    /// Python's `imap`: a lazy iterator of `func` over `items`, in input order, one
    /// item per task. At most [`IMAP_CHUNKS_PER_PROCESS`] × processes chunks are in
    /// flight, so an endless input is fine: see [`IMap`].
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] on a closed pool.
    pub fn imap<T: Pod, R: Pod, I: IntoIterator<Item = T>>(
        &self,
        func: fn(T) -> R,
        items: I,
    ) -> Result<IMap<'_, I::IntoIter, T, R>, PoolError> {
        self.imap_chunked(func, items, 1)
    }

    /// [`imap`](Pool::imap) with chunks of `chunksize` items.
    ///
    /// # Errors
    ///
    /// As for [`imap`](Pool::imap); [`PoolError::InvalidArgument`] for a chunksize
    /// of 0.
    pub fn imap_chunked<T: Pod, R: Pod, I: IntoIterator<Item = T>>(
        &self,
        func: fn(T) -> R,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'_, I::IntoIter, T, R>, PoolError> {
        self.new_imap(func, items.into_iter(), chunksize, true)
    }

    /// Python's `imap_unordered`: as [`imap`](Pool::imap), results in the order
    /// they complete.
    ///
    /// # Errors
    ///
    /// As for [`imap`](Pool::imap).
    pub fn imap_unordered<T: Pod, R: Pod, I: IntoIterator<Item = T>>(
        &self,
        func: fn(T) -> R,
        items: I,
    ) -> Result<IMap<'_, I::IntoIter, T, R>, PoolError> {
        self.imap_unordered_chunked(func, items, 1)
    }

    /// [`imap_unordered`](Pool::imap_unordered) with chunks of `chunksize` items.
    ///
    /// # Errors
    ///
    /// As for [`imap_chunked`](Pool::imap_chunked).
    pub fn imap_unordered_chunked<T: Pod, R: Pod, I: IntoIterator<Item = T>>(
        &self,
        func: fn(T) -> R,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'_, I::IntoIter, T, R>, PoolError> {
        self.new_imap(func, items.into_iter(), chunksize, false)
    }

    fn new_imap<T: Pod, R: Pod, I: Iterator<Item = T>>(
        &self,
        func: fn(T) -> R,
        iter: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<'_, I, T, R>, PoolError> {
        let chunksize = chunk_for(chunksize, size_of::<T>(), size_of::<R>())?;
        let job = self.lock().new_job(ordered)?;
        Ok(IMap {
            pool: self,
            job,
            iter: Some(iter),
            func,
            chunksize,
            max_in_flight: IMAP_CHUNKS_PER_PROCESS * self.processes,
            submitted: 0,
            consumed: 0,
            ordered,
            buffer: VecDeque::new(),
            _types: PhantomData,
        })
    }

    /// Python's `close`: the pool takes no new work; what was submitted finishes.
    pub fn close(&self) {
        let mut inner = self.lock();
        if inner.state == State::Running {
            inner.state = State::Closed;
        }
    }

    /// Python's `terminate`: stops the workers now (SIGTERM, then SIGKILL after a
    /// second); unfinished tasks fail with [`PoolError::Terminated`].
    pub fn terminate(&self) {
        self.lock().terminate();
    }

    /// Python's `join`: waits for the submitted work to finish and the workers to
    /// exit, after [`close`](Pool::close) (or [`terminate`](Pool::terminate)).
    ///
    /// # Errors
    ///
    /// [`PoolError::StillRunning`] if the pool was neither closed nor terminated;
    /// an error met while making progress ([`PoolError::Os`] if a replacement
    /// worker cannot be forked).
    pub fn join(&self) -> Result<(), PoolError> {
        if self.lock().state == State::Running {
            return Err(PoolError::StillRunning);
        }
        self.wait_for(None, |inner| inner.idle())?;
        self.lock().shut_down_workers();
        Ok(())
    }
}

impl Drop for Pool {
    /// Terminates the pool, like leaving Python's `with Pool(...)` block.
    fn drop(&mut self) {
        self.lock().terminate();
    }
}

/// The result of [`Pool::map_async`] or [`Pool::apply_async`]: Python's
/// `AsyncResult`. Dropping it discards the result (the tasks still run).
pub struct AsyncResult<'p, V> {
    pool: &'p Pool,
    job: u64,
    decode: fn(Chunks) -> Result<V, PoolError>,
}

impl<V> std::fmt::Debug for AsyncResult<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("job", &self.job)
            .finish()
    }
}

impl<V> AsyncResult<'_, V> {
    /// Waits for the result and returns it.
    ///
    /// # Errors
    ///
    /// The first failed chunk's error (see [`Pool::map`]).
    pub fn get(mut self) -> Result<V, PoolError> {
        let job = self.job;
        self.pool.wait_for(None, |inner| inner.job_ready(job))?;
        self.take()
    }

    /// Waits up to `timeout` for the result.
    ///
    /// # Errors
    ///
    /// [`PoolError::Timeout`] if it is not ready in time (the handle can be waited
    /// on again); [`PoolError::ResultTaken`] once the result was returned; as for
    /// [`get`](AsyncResult::get).
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<V, PoolError> {
        let job = self.job;
        self.pool
            .wait_for(Some(Instant::now() + timeout), |inner| inner.job_ready(job))?;
        self.take()
    }

    fn take(&mut self) -> Result<V, PoolError> {
        let chunks = self.pool.lock().take_job(self.job)?;
        (self.decode)(chunks)
    }

    /// Whether the result is ready (makes progress first, without waiting).
    pub fn ready(&self) -> bool {
        let mut inner = self.pool.lock();
        let _ = inner.pump(Duration::ZERO);
        inner.job_ready(self.job)
    }

    /// Whether the job completed without error; `None` while it is not ready (or
    /// once the result was taken).
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        self.pool.lock().job_successful(self.job)
    }

    /// Waits until the result is ready. (An error met while making progress, such
    /// as a replacement worker that cannot be forked, is retried every 20 ms;
    /// [`get`](AsyncResult::get) returns it instead.)
    pub fn wait(&self) {
        let job = self.job;
        while self
            .pool
            .wait_for(None, |inner| inner.job_ready(job))
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` until the result is ready; whether it is.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let job = self.job;
        self.pool
            .wait_for(Some(Instant::now() + timeout), |inner| inner.job_ready(job))
            .is_ok()
    }
}

impl<V> Drop for AsyncResult<'_, V> {
    fn drop(&mut self) {
        self.pool.lock().drop_job(self.job);
    }
}

/// The lazy iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: yields each
/// result as `Ok`, or one `Err` per failed chunk (then carries on with the next).
///
/// It pulls items from its input only to keep `max_in_flight` chunks
/// ([`IMAP_CHUNKS_PER_PROCESS`] × processes) submitted and not yet yielded, so after
/// yielding `n` results it has pulled at most `n + (max_in_flight + 1) × chunksize`
/// items, and an endless input is fine.
pub struct IMap<'p, I, T, R> {
    pool: &'p Pool,
    job: u64,
    /// The input; `None` once exhausted (or after an error submitting).
    iter: Option<I>,
    func: fn(T) -> R,
    chunksize: usize,
    max_in_flight: usize,
    /// Chunks submitted.
    submitted: usize,
    /// Chunks whose results were moved to `buffer`.
    consumed: usize,
    ordered: bool,
    buffer: VecDeque<Result<R, PoolError>>,
    _types: PhantomData<fn(T) -> R>,
}

impl<I, T, R> std::fmt::Debug for IMap<'_, I, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("submitted", &self.submitted)
            .field("consumed", &self.consumed)
            .field("ordered", &self.ordered)
            .finish()
    }
}

impl<I: Iterator<Item = T>, T: Pod, R: Pod> IMap<'_, I, T, R> {
    /// Chunks this iterator keeps in flight at most.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Pulls items and submits chunks until `max_in_flight` are in flight or the
    /// input ends.
    fn fill(&mut self) -> Result<(), PoolError> {
        while self.submitted - self.consumed < self.max_in_flight {
            let Some(iter) = self.iter.as_mut() else {
                break;
            };
            let chunk: Vec<T> = iter.by_ref().take(self.chunksize).collect();
            if chunk.len() < self.chunksize {
                self.iter = None;
            }
            if chunk.is_empty() {
                break;
            }
            let mut inner = self.pool.lock();
            inner.submit(
                self.job,
                self.submitted,
                &task::Body::pod(self.func, &chunk),
            )?;
            inner.pump(Duration::ZERO)?;
            self.submitted += 1;
        }
        Ok(())
    }

    /// Moves one chunk's outcome into `buffer`.
    fn unpack(&mut self, outcome: Outcome) {
        match outcome {
            Ok((bytes, count)) => {
                let mut items = Vec::with_capacity(count);
                match task::decode_items::<R>(&bytes, count, &mut items) {
                    Ok(()) => self.buffer.extend(items.into_iter().map(Ok)),
                    Err(why) => self.buffer.push_back(Err(PoolError::Corrupt(why))),
                }
            }
            Err(e) => self.buffer.push_back(Err(e)),
        }
    }
}

impl<I: Iterator<Item = T>, T: Pod, R: Pod> Iterator for IMap<'_, I, T, R> {
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Result<R, PoolError>> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                return Some(r);
            }
            if let Err(e) = self.fill() {
                self.iter = None;
                return Some(Err(e));
            }
            if self.consumed == self.submitted {
                return None;
            }
            let want = self.ordered.then_some(self.consumed);
            let job = self.job;
            let mut got = None;
            let waited = self.pool.wait_for(None, |inner| {
                got = inner.take_chunk(job, want);
                got.is_some()
            });
            match (waited, got) {
                (Err(e), _) => return Some(Err(e)),
                (Ok(()), Some(Ok(outcome))) => {
                    self.consumed += 1;
                    self.unpack(outcome);
                }
                (Ok(()), Some(Err(e))) => {
                    self.iter = None;
                    self.consumed = self.submitted;
                    return Some(Err(e));
                }
                (Ok(()), None) => return None,
            }
        }
    }
}

impl<I, T, R> Drop for IMap<'_, I, T, R> {
    fn drop(&mut self) {
        self.pool.lock().drop_job(self.job);
    }
}
