//! The parent's side of a pool: the workers, the tasks in flight and the jobs they
//! belong to; dispatch, results and supervision. Everything here runs under the
//! pool's mutex, in whichever thread is waiting for a result.

use super::claims::Claims;
use super::error::{PoolError, from_queue};
use super::forker::Forker;
use super::task::{self, Key};
use super::worker::Spec;
use crate::process::{ExitStatus, Process};
use crate::queue::ByteQueue;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Tasks queued at one worker at a time: one running, one waiting behind it.
pub(super) const DEPTH: usize = 2;
/// The byte size of a queue slot.
const SLOT: usize = 64;
/// Slots of a worker's task queue: room for `DEPTH` messages of `MAX_MESSAGE`.
const TASK_SLOTS: usize = 4096;
/// Slots of the result queue every worker puts to.
const RESULT_SLOTS: usize = 8192;
/// The largest task or result message; chunks are cut to fit.
pub(super) const MAX_MESSAGE: usize = 64 * 1024;
/// The most items in one chunk (for zero-sized item types).
const MAX_CHUNK_ITEMS: usize = 1 << 16;
/// How long a wait sleeps on the result queue before it checks the workers.
const POLL: Duration = Duration::from_millis(20);

/// The most items a chunk of `T` → `R` may hold; `None` if one item does not fit a
/// message.
pub(super) fn max_chunk(item: usize, result: usize) -> Option<usize> {
    let room = MAX_MESSAGE - task::TASK_HEADER;
    match item.max(result) {
        0 => Some(MAX_CHUNK_ITEMS),
        size if size > room => None,
        size => Some((room / size).min(MAX_CHUNK_ITEMS)),
    }
}

/// A chunk's outcome: its results' bytes and their count, or why it failed.
pub(super) type Outcome = Result<(Vec<u8>, usize), PoolError>;

/// A completed job's chunks in order: each one's results' bytes and their count.
pub(super) type Chunks = Vec<(Vec<u8>, usize)>;

/// A live worker.
struct Worker {
    process: Process,
    /// This worker's own task queue (a replacement gets a fresh one).
    tasks: ByteQueue,
    /// The ids of the tasks put to `tasks` and not yet answered, oldest first.
    assigned: VecDeque<u64>,
    /// Tasks put to this worker in its life (for maxtasksperchild).
    sent: usize,
}

/// A task not yet answered.
struct TaskEntry {
    job: u64,
    /// Its chunk's index in the job.
    chunk: usize,
    /// Items in the chunk.
    count: usize,
    /// The encoded message, kept to send it again should its worker die before
    /// starting it.
    msg: Vec<u8>,
    /// The worker slot it was put to, `None` while pending.
    worker: Option<usize>,
    /// Times a worker died running it.
    deaths: u32,
}

/// A map, an apply or an imap: its chunks' outcomes as they arrive.
pub(super) struct Job {
    /// Outcomes by chunk index, until taken.
    results: HashMap<usize, Outcome>,
    /// Chunk indices in the order they completed (unordered jobs only).
    completed: VecDeque<usize>,
    ordered: bool,
    /// Chunks submitted and not yet completed.
    outstanding: usize,
}

/// Whether the pool takes work.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum State {
    Running,
    Closed,
    Terminated,
}

/// The pool's settings.
/// Workers in a row that end before their initializer returns, after which a pool
/// with an initializer is broken (as if the initializer had panicked).
const EARLY_DEATHS: u32 = 3;

pub(super) struct Config {
    pub(super) processes: usize,
    pub(super) initializer: Option<fn()>,
    pub(super) maxtasks: Option<usize>,
    pub(super) method: crate::start::StartMethod,
    /// Runs again of a task whose worker died running it.
    pub(super) retries: u32,
}

pub(super) struct Inner {
    config: Config,
    key: Key,
    results: ByteQueue,
    claims: Claims,
    /// By slot; `None` once joined (or while a replacement could not be started).
    workers: Vec<Option<Worker>>,
    tasks: HashMap<u64, TaskEntry>,
    /// Task ids waiting for room at a worker, in submission order.
    pending: VecDeque<u64>,
    jobs: HashMap<u64, Job>,
    /// The last id handed out (tasks and jobs share the sequence; 0 is never used).
    last_id: u64,
    pub(super) state: State,
    /// Set when the initializer panicked: (pid, message).
    broken: Option<(u32, String)>,
    /// Workers in a row that died before their initializer returned.
    early_deaths: u32,
    last_check: Instant,
    /// Forks every worker (declared last: dropped after the workers are reaped).
    forker: Forker,
}

impl Inner {
    /// Creates the queues and the claim table and forks the workers.
    pub(super) fn start(config: Config) -> Result<Inner, PoolError> {
        use crate::Object;
        let claims = Claims::create_anonymous(config.processes).map_err(from_queue)?;
        let results = ByteQueue::new(RESULT_SLOTS, SLOT).map_err(from_queue)?;
        let mut inner = Inner {
            key: Key::new().map_err(PoolError::Os)?,
            results,
            claims,
            workers: (0..config.processes).map(|_| None).collect(),
            config,
            tasks: HashMap::new(),
            pending: VecDeque::new(),
            jobs: HashMap::new(),
            last_id: 0,
            state: State::Running,
            broken: None,
            early_deaths: 0,
            last_check: Instant::now(),
            forker: Forker::start()?,
        };
        for slot in 0..inner.workers.len() {
            let w = inner.spawn(slot)?;
            inner.workers[slot] = Some(w);
        }
        Ok(inner)
    }

    /// Forks a worker for `slot`, with a fresh task queue.
    fn spawn(&self, slot: usize) -> Result<Worker, PoolError> {
        self.claims
            .slot(slot)
            .ok_or_else(|| PoolError::Corrupt(format!("no claim line for slot {slot}")))?
            .state()
            .clear();
        let tasks = ByteQueue::new(TASK_SLOTS, SLOT).map_err(from_queue)?;
        let spec = Spec {
            tasks: tasks.clone(),
            results: self.results.clone(),
            claims: self.claims.clone(),
            slot,
            key: self.key.clone(),
            initializer: self.config.initializer,
            maxtasks: self.config.maxtasks,
            parent: crate::os::proc::ProcessId::current(),
            method: self.config.method,
        };
        let process = self.forker.fork(spec)?;
        Ok(Worker {
            process,
            tasks,
            assigned: VecDeque::new(),
            sent: 0,
        })
    }

    /// The workers' pids.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .flatten()
            .map(|w| w.process.pid())
            .collect()
    }

    /// Fails unless the pool takes work.
    fn check_running(&self) -> Result<(), PoolError> {
        if let Some((pid, message)) = &self.broken {
            return Err(PoolError::Initializer {
                pid: *pid,
                message: message.clone(),
            });
        }
        match self.state {
            State::Running => Ok(()),
            _ => Err(PoolError::Closed),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// A new job with no chunks yet.
    pub(super) fn new_job(&mut self, ordered: bool) -> Result<u64, PoolError> {
        self.check_running()?;
        let id = self.next_id();
        self.jobs.insert(
            id,
            Job {
                results: HashMap::new(),
                completed: VecDeque::new(),
                ordered,
                outstanding: 0,
            },
        );
        Ok(id)
    }

    /// Submits chunk `chunk` of `job`, carrying `body`.
    pub(super) fn submit(
        &mut self,
        job: u64,
        chunk: usize,
        body: &task::Body<'_>,
    ) -> Result<(), PoolError> {
        self.check_running()?;
        if !self.jobs.contains_key(&job) {
            return Err(PoolError::ResultTaken);
        }
        let id = self.next_id();
        let msg = task::encode(&self.key, id, body);
        if msg.len() > MAX_MESSAGE {
            return Err(PoolError::InvalidArgument(format!(
                "a chunk of {} items encodes to {} bytes; a task message holds at most {MAX_MESSAGE}: use a smaller chunksize",
                body.count,
                msg.len()
            )));
        }
        if let Some(j) = self.jobs.get_mut(&job) {
            j.outstanding += 1;
        }
        self.tasks.insert(
            id,
            TaskEntry {
                job,
                chunk,
                count: body.count,
                msg,
                worker: None,
                deaths: 0,
            },
        );
        self.pending.push_back(id);
        Ok(())
    }

    /// Forgets a job whose handle was dropped (its running tasks finish unseen).
    pub(super) fn drop_job(&mut self, job: u64) {
        self.jobs.remove(&job);
    }

    /// Whether every submitted chunk of `job` has completed (a job no longer here
    /// has nothing to wait for).
    pub(super) fn job_ready(&self, job: u64) -> bool {
        self.jobs.get(&job).is_none_or(|j| j.outstanding == 0)
    }

    /// Whether `job` completed with no failed chunk (`None` if not ready).
    pub(super) fn job_successful(&self, job: u64) -> Option<bool> {
        let j = self.jobs.get(&job)?;
        (j.outstanding == 0).then(|| j.results.values().all(|r| r.is_ok()))
    }

    /// Takes a completed job's outcomes in chunk order; the first failed chunk's
    /// error if any failed.
    pub(super) fn take_job(&mut self, job: u64) -> Result<Chunks, PoolError> {
        let mut j = self.jobs.remove(&job).ok_or(PoolError::ResultTaken)?;
        let mut out = Vec::with_capacity(j.results.len());
        for i in 0..j.results.len() {
            match j.results.remove(&i) {
                Some(r) => out.push(r?),
                None => return Err(PoolError::Corrupt(format!("chunk {i} has no result"))),
            }
        }
        Ok(out)
    }

    /// Takes one completed chunk of `job`: chunk `want`, or (`None`) the earliest
    /// completed. `None` if it has not completed yet.
    pub(super) fn take_chunk(
        &mut self,
        job: u64,
        want: Option<usize>,
    ) -> Option<Result<Outcome, PoolError>> {
        let Some(j) = self.jobs.get_mut(&job) else {
            return Some(Err(PoolError::ResultTaken));
        };
        let chunk = match want {
            Some(c) => c,
            None => *j.completed.front()?,
        };
        let r = j.results.remove(&chunk)?;
        if want.is_none() {
            j.completed.pop_front();
        }
        Some(Ok(r))
    }

    /// Records task `id`'s outcome in its job.
    fn complete(&mut self, id: u64, outcome: Result<Vec<u8>, PoolError>) {
        let Some(t) = self.tasks.remove(&id) else {
            return;
        };
        if let Some(w) = t
            .worker
            .and_then(|s| self.workers.get_mut(s))
            .and_then(Option::as_mut)
        {
            w.assigned.retain(|&a| a != id);
        }
        if let Some(j) = self.jobs.get_mut(&t.job) {
            j.outstanding = j.outstanding.saturating_sub(1);
            j.results.insert(t.chunk, outcome.map(|b| (b, t.count)));
            if !j.ordered {
                j.completed.push_back(t.chunk);
            }
        }
    }

    /// Fails every task not yet answered with `err()`.
    fn fail_all(&mut self, err: impl Fn() -> PoolError) {
        self.pending.clear();
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            self.complete(id, Err(err()));
        }
    }

    /// Puts pending tasks to workers with room, the least loaded first.
    fn dispatch(&mut self) {
        if self.pending.is_empty() || self.broken.is_some() || self.state == State::Terminated {
            return;
        }
        for level in 1..=DEPTH {
            for slot in 0..self.workers.len() {
                let Some(&id) = self.pending.front() else {
                    return;
                };
                let Some(w) = self.workers[slot].as_mut() else {
                    continue;
                };
                if w.assigned.len() >= level || self.config.maxtasks.is_some_and(|m| w.sent >= m) {
                    continue;
                }
                let Some(t) = self.tasks.get_mut(&id) else {
                    self.pending.pop_front();
                    continue;
                };
                // Room was reserved: at most DEPTH messages of MAX_MESSAGE each.
                if w.tasks.put_nowait(&t.msg).is_err() {
                    continue;
                }
                t.worker = Some(slot);
                w.assigned.push_back(id);
                w.sent += 1;
                self.pending.pop_front();
            }
        }
    }

    /// Handles one result message.
    fn on_result(&mut self, msg: &[u8]) {
        let Some((id, pid, kind, payload)) = task::decode_result(msg) else {
            return;
        };
        let text = || String::from_utf8_lossy(payload).into_owned();
        if kind == task::RESULT_INIT {
            let message = text();
            self.broken = Some((pid, message.clone()));
            self.fail_all(|| PoolError::Initializer {
                pid,
                message: message.clone(),
            });
            return;
        }
        // Only a task that was put to a worker can have a result.
        if self.tasks.get(&id).is_none_or(|t| t.worker.is_none()) {
            return;
        }
        let outcome = match kind {
            task::RESULT_OK => Ok(payload.to_vec()),
            task::RESULT_PANIC => Err(PoolError::Panicked {
                pid,
                message: text(),
            }),
            task::RESULT_CORRUPT => Err(PoolError::Corrupt(text())),
            task::RESULT_ENCODING => {
                Err(PoolError::Encoding(format!("in worker {pid}: {}", text())))
            }
            other => Err(PoolError::Corrupt(format!("result of kind {other}"))),
        };
        self.complete(id, outcome);
    }

    /// Takes the results there are now, waiting up to `wait` for the first.
    fn receive(&mut self, wait: Duration) -> Result<bool, PoolError> {
        let first = if wait.is_zero() {
            self.results.get_nowait()
        } else {
            self.results.get_timeout(wait)
        };
        let msg = match first {
            Ok(m) => m,
            Err(crate::queue::TryGetError::Empty) => return Ok(false),
            Err(e) => return Err(from_queue(e)),
        };
        self.on_result(&msg);
        for _ in 0..256 {
            match self.results.get_nowait() {
                Ok(m) => self.on_result(&m),
                Err(_) => break,
            }
        }
        Ok(true)
    }

    /// One step of progress: dispatch, results (waiting up to `wait`), and a check
    /// of the workers when idle or every `POLL`.
    pub(super) fn pump(&mut self, wait: Duration) -> Result<(), PoolError> {
        self.dispatch();
        let got = self.receive(wait)?;
        if !got || self.last_check.elapsed() >= POLL {
            self.supervise()?;
        }
        self.dispatch();
        Ok(())
    }

    /// Whether the slots need live workers.
    fn wants_workers(&self) -> bool {
        self.broken.is_none()
            && match self.state {
                State::Running => true,
                State::Closed => !self.tasks.is_empty(),
                State::Terminated => false,
            }
    }

    /// Notices dead workers: fails the task each was running (its claim), sends
    /// the ones it had not started again, and starts a replacement.
    fn supervise(&mut self) -> Result<(), PoolError> {
        self.last_check = Instant::now();
        for slot in 0..self.workers.len() {
            let Some(w) = self.workers[slot].as_mut() else {
                if self.wants_workers() {
                    let w = self.spawn(slot)?;
                    self.workers[slot] = Some(w);
                }
                continue;
            };
            let Some(code) = w.process.exitcode() else {
                continue;
            };
            let status = if code < 0 {
                ExitStatus::Signaled(-code)
            } else {
                ExitStatus::Exited(code)
            };
            let Some(dead) = self.workers[slot].take() else {
                continue;
            };
            let pid = dead.process.pid();
            // Results it put before dying come first.
            for _ in 0..10_000 {
                if !self.receive(Duration::from_millis(1))? {
                    break;
                }
            }
            let running = self.claims.slot(slot).and_then(|c| c.state().running(pid));
            let ready = self
                .claims
                .slot(slot)
                .is_some_and(|c| c.state().was_ready(pid));
            self.early_deaths = if ready { 0 } else { self.early_deaths + 1 };
            if self.config.initializer.is_some()
                && self.early_deaths >= EARLY_DEATHS
                && self.broken.is_none()
            {
                // An initializer that exits (or is killed) instead of returning or
                // panicking: replacing the workers would go on forever.
                let message = format!(
                    "{EARLY_DEATHS} workers in a row ended ({status}) before their \
                     initializer returned"
                );
                self.broken = Some((pid, message.clone()));
                self.fail_all(|| PoolError::Initializer {
                    pid,
                    message: message.clone(),
                });
            }
            let mut again = Vec::new();
            for id in dead.assigned {
                let Some(t) = self.tasks.get_mut(&id) else {
                    continue;
                };
                if Some(id) == running && t.deaths >= self.config.retries {
                    self.complete(id, Err(PoolError::WorkerDied { pid, status }));
                } else {
                    if Some(id) == running {
                        // Retried: it runs again on another worker.
                        t.deaths += 1;
                    }
                    // Never started (no claim): it runs on another worker.
                    t.worker = None;
                    again.push(id);
                }
            }
            for id in again.into_iter().rev() {
                self.pending.push_front(id);
            }
            if self.wants_workers() {
                let w = self.spawn(slot)?;
                self.workers[slot] = Some(w);
            }
        }
        Ok(())
    }

    /// Whether no task is waiting or running.
    pub(super) fn idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Shuts down the task queues (workers exit when theirs is empty) and reaps the
    /// workers.
    pub(super) fn shut_down_workers(&mut self) {
        for w in self.workers.iter().flatten() {
            w.tasks.shutdown(false);
        }
        for w in self.workers.iter_mut().filter_map(Option::take) {
            let mut p = w.process;
            let _ = p.join();
        }
    }

    /// Python's `terminate`: fails what is unfinished, SIGTERM to every worker
    /// (SIGKILL to one still there after a second), and reaps them.
    pub(super) fn terminate(&mut self) {
        self.state = State::Terminated;
        self.fail_all(|| PoolError::Terminated);
        let mut workers: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
        for w in &workers {
            let _ = w.process.terminate();
        }
        for w in &mut workers {
            if !matches!(w.process.join_timeout(Duration::from_secs(1)), Ok(Some(_))) {
                let _ = w.process.kill();
                let _ = w.process.join();
            }
        }
    }
}

/// For the `Debug` of `Pool`.
impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.config.processes)
            .field("state", &self.state)
            .field("tasks", &self.tasks.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}
