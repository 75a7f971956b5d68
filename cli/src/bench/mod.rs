//! `shmproc bench`: shmproc's Queue and Pipe between real processes, and in the same
//! run the alternatives — a floor and ceilings in raw shared memory, the OS's pipes
//! and sockets, crossbeam-channel between threads, Python's multiprocessing — so
//! every figure is also a ratio measured minutes, not days, apart. Two more suites,
//! chosen with `--suite`: Dict (`dicts`, `lmdb`) and Pool (`pools`).
//!
//! Each workload runs all its systems once per run, in turn, for several runs: the
//! floor and ceilings are interleaved with the systems, and ratios are taken run by
//! run (paired) before the median, so drift on a noisy machine cancels out.

mod baselines;
mod dicts;
mod goals;
mod harness;
mod hog;
#[cfg(feature = "lmdb")]
mod lmdb;
#[cfg(feature = "peers")]
mod peers;
mod pools;
mod report;
mod system;
mod systems;

use harness::Sample;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The workloads, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Workload {
    /// Throughput of 8-byte items.
    #[value(name = "T8", alias = "t8")]
    T8,
    /// Throughput of 4 KiB messages.
    #[value(name = "T4K", alias = "t4k")]
    T4K,
    /// Throughput of 1 MiB messages.
    #[value(name = "T1M", alias = "t1m")]
    T1M,
    /// Ping-pong round trip of an 8-byte message.
    #[value(name = "RTT", alias = "rtt")]
    Rtt,
    /// Two producers and two consumers on one queue.
    #[value(name = "MPMC", alias = "mpmc")]
    Mpmc,
    /// A sleeping consumer woken by a put.
    #[value(name = "WAKE", alias = "wake")]
    Wake,
    /// Dict get, keys drawn at random from 1 k (cache-resident).
    #[value(name = "DGET1K", alias = "dget1k")]
    DictGet1K,
    /// Dict get, keys drawn at random from 1 M.
    #[value(name = "DGET1M", alias = "dget1m")]
    DictGet1M,
    /// Dict insert/update, keys drawn at random from 100 k.
    #[value(name = "DINS", alias = "dins")]
    DictInsert,
    /// Dict 90% get / 10% insert from two processes.
    #[value(name = "DMIX", alias = "dmix")]
    DictMixed,
    /// Pool map of a trivial function, default chunksize.
    #[value(name = "PMAP", alias = "pmap")]
    PoolMap,
    /// Pool map with chunksize 1 (per-task overhead).
    #[value(name = "PMAP1", alias = "pmap1")]
    PoolMap1,
    /// Pool apply round trip.
    #[value(name = "PAPPLY", alias = "papply")]
    PoolApply,
}

impl Workload {
    const ALL: [Workload; 13] = [
        Workload::T8,
        Workload::T4K,
        Workload::T1M,
        Workload::Rtt,
        Workload::Mpmc,
        Workload::Wake,
        Workload::DictGet1K,
        Workload::DictGet1M,
        Workload::DictInsert,
        Workload::DictMixed,
        Workload::PoolMap,
        Workload::PoolMap1,
        Workload::PoolApply,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::T8 => "T8",
            Workload::T4K => "T4K",
            Workload::T1M => "T1M",
            Workload::Rtt => "RTT",
            Workload::Mpmc => "MPMC",
            Workload::Wake => "WAKE",
            Workload::DictGet1K => "DGET1K",
            Workload::DictGet1M => "DGET1M",
            Workload::DictInsert => "DINS",
            Workload::DictMixed => "DMIX",
            Workload::PoolMap => "PMAP",
            Workload::PoolMap1 => "PMAP1",
            Workload::PoolApply => "PAPPLY",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Workload::T8 => "T8: throughput of 8-byte items, 1 producer → 1 consumer",
            Workload::T4K => "T4K: throughput of 4 KiB messages, 1 producer → 1 consumer",
            Workload::T1M => "T1M: throughput of 1 MiB messages, 1 producer → 1 consumer",
            Workload::Rtt => "RTT: round trip of an 8-byte message, every trip timed",
            Workload::Mpmc => "MPMC: 2 producers and 2 consumers on one queue, 8-byte items",
            Workload::Wake => "WAKE: a sleeping consumer woken by a put (put → get returns)",
            Workload::DictGet1K => {
                "DGET1K: map get (u64 → u64), random keys of 1 k (cache-resident); msgs/s = gets/s"
            }
            Workload::DictGet1M => {
                "DGET1M: map get (u64 → u64), random keys of 1 M; msgs/s = gets/s"
            }
            Workload::DictInsert => {
                "DINS: map insert/update (u64 → u64), random keys of 100 k, empty at start; msgs/s = inserts/s"
            }
            Workload::DictMixed => {
                "DMIX: map 90% get / 10% insert, 2 callers at once, random keys of 100 k; msgs/s = ops/s"
            }
            Workload::PoolMap => {
                "PMAP: pool map of x → 2x + 1 over 100 k u64 items, default chunksize; msgs/s = items/s"
            }
            Workload::PoolMap1 => {
                "PMAP1: pool map of x → 2x + 1, chunksize 1 (per-task overhead); msgs/s = items/s"
            }
            Workload::PoolApply => "PAPPLY: pool apply(x → 2x + 1) round trip, every call timed",
        }
    }

    /// The suite the workload belongs to.
    fn suite(self) -> Suite {
        match self {
            Workload::T8
            | Workload::T4K
            | Workload::T1M
            | Workload::Rtt
            | Workload::Mpmc
            | Workload::Wake => Suite::Ipc,
            Workload::DictGet1K
            | Workload::DictGet1M
            | Workload::DictInsert
            | Workload::DictMixed => Suite::Dict,
            Workload::PoolMap | Workload::PoolMap1 | Workload::PoolApply => Suite::Pool,
        }
    }

    fn is_latency(self) -> bool {
        matches!(self, Workload::Rtt | Workload::Wake | Workload::PoolApply)
    }
}

/// Groups of workloads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Suite {
    /// Queue and Pipe: T8, T4K, T1M, RTT, MPMC, WAKE.
    Ipc,
    /// Dict: DGET1K, DGET1M, DINS, DMIX.
    Dict,
    /// Pool: PMAP, PMAP1, PAPPLY.
    Pool,
    /// Every workload.
    All,
}

/// `shmproc bench` options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A few seconds in all: fewer runs and messages.
    #[arg(long)]
    quick: bool,
    /// Only these workloads (repeatable): T8, T4K, T1M, RTT, MPMC, WAKE, DGET1K,
    /// DGET1M, DINS, DMIX, PMAP, PMAP1, PAPPLY.
    #[arg(long, value_enum)]
    only: Vec<Workload>,
    /// The workloads of these suites (repeatable), when --only is not given: ipc
    /// (the default), dict, pool, all.
    #[arg(long, value_enum, default_value = "ipc")]
    suite: Vec<Suite>,
    /// Print JSON on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Also draw throughput and latency bars per system into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Leave Python's multiprocessing out even if python3 is on PATH.
    #[arg(long)]
    no_python: bool,
    /// Start N busy processes beside the measurement (a loaded machine); without N,
    /// one per online CPU. Shows whether a system falls off a cliff when it has to
    /// win a CPU back after sleeping.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    hog: Option<usize>,
    /// Tiny counts and one run: checks that everything runs, measures nothing
    /// meaningful (for tests).
    #[arg(long, hide = true)]
    smoke: bool,
}

/// Counts per run for each workload (before each system's divisor), and runs.
#[derive(Debug, Clone)]
pub struct Plan {
    mode: &'static str,
    runs: usize,
    t8: u64,
    t4k: u64,
    t1m: u64,
    rtt: u64,
    mpmc: u64,
    wake: u64,
    dict_get: u64,
    dict_insert: u64,
    dict_mixed: u64,
    /// Keys of DGET1M (a tenth of it for DINS and DMIX).
    dict_big_keys: u64,
    pool_map: u64,
    pool_map1: u64,
    pool_apply: u64,
    /// Pause before each wake-up: longer than any spin, so the consumer sleeps.
    wake_gap: Duration,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        if args.smoke {
            Plan {
                mode: "smoke",
                runs: 1,
                t8: 2_000,
                t4k: 400,
                t1m: 16,
                rtt: 400,
                mpmc: 2_000,
                wake: 20,
                dict_get: 2_000,
                dict_insert: 2_000,
                dict_mixed: 2_000,
                dict_big_keys: 20_000,
                pool_map: 2_000,
                pool_map1: 400,
                pool_apply: 200,
                wake_gap: Duration::from_micros(200),
            }
        } else if args.quick {
            Plan {
                mode: "quick",
                runs: 3,
                t8: 200_000,
                t4k: 20_000,
                t1m: 200,
                rtt: 5_000,
                mpmc: 100_000,
                wake: 100,
                dict_get: 200_000,
                dict_insert: 100_000,
                dict_mixed: 200_000,
                dict_big_keys: 1_000_000,
                pool_map: 100_000,
                pool_map1: 10_000,
                pool_apply: 2_000,
                wake_gap: Duration::from_micros(300),
            }
        } else {
            Plan {
                mode: "full",
                runs: 5,
                t8: 2_000_000,
                t4k: 200_000,
                t1m: 2_000,
                rtt: 50_000,
                mpmc: 1_000_000,
                wake: 1_000,
                dict_get: 2_000_000,
                dict_insert: 1_000_000,
                dict_mixed: 2_000_000,
                dict_big_keys: 1_000_000,
                pool_map: 100_000,
                pool_map1: 100_000,
                pool_apply: 20_000,
                wake_gap: Duration::from_micros(500),
            }
        }
    }

    fn count(&self, w: Workload) -> u64 {
        match w {
            Workload::T8 => self.t8,
            Workload::T4K => self.t4k,
            Workload::T1M => self.t1m,
            Workload::Rtt => self.rtt,
            Workload::Mpmc => self.mpmc,
            Workload::Wake => self.wake,
            Workload::DictGet1K | Workload::DictGet1M => self.dict_get,
            Workload::DictInsert => self.dict_insert,
            Workload::DictMixed => self.dict_mixed,
            Workload::PoolMap => self.pool_map,
            Workload::PoolMap1 => self.pool_map1,
            Workload::PoolApply => self.pool_apply,
        }
    }
}

/// Every run of one system.
pub struct Measured {
    pub system: system::System,
    /// Count per run (after the divisor).
    pub count: u64,
    pub runs: Vec<Sample>,
}

/// One workload's systems and their runs.
pub struct WorkloadResult {
    pub workload: Workload,
    pub systems: Vec<Measured>,
}

/// Progress on stderr: one rewritten line on a terminal, a line per workload run
/// otherwise.
struct Progress {
    tty: bool,
}

impl Progress {
    fn show(&self, w: Workload, run: usize, runs: usize, system: &str) {
        if self.tty {
            eprint!("\r\x1b[K[{} run {}/{}] {}", w.name(), run + 1, runs, system);
        } else if system.is_empty() {
            eprintln!("bench: {} run {}/{}", w.name(), run + 1, runs);
        }
    }

    fn done(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// How long each workload's untimed warm-up passes last at least.
const WARM_UP: Duration = Duration::from_millis(300);

/// Runs `shmproc bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmproc bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let plan = Plan::new(&args);
    let workloads: Vec<Workload> = if args.only.is_empty() {
        Workload::ALL
            .into_iter()
            .filter(|w| args.suite.contains(&Suite::All) || args.suite.contains(&w.suite()))
            .collect()
    } else {
        Workload::ALL
            .into_iter()
            .filter(|w| args.only.contains(w))
            .collect()
    };
    let python = !args.no_python && systems::python_available();
    let progress = Progress {
        tty: std::io::stderr().is_terminal(),
    };
    let mut machine = report::Machine::here();
    let hogs = args.hog.map(hog::Hogs::start).transpose()?;
    if let Some(h) = &hogs {
        eprintln!(
            "bench: {} CPU hog(s) running beside the measurement",
            h.count()
        );
        machine.hogs = h.count();
    }
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for w in workloads {
        let list = systems::systems(w, &plan, python);
        let mut measured: Vec<Measured> = list
            .into_iter()
            .map(|s| Measured {
                count: (plan.count(w) / s.divisor).max(20),
                system: s,
                runs: Vec::new(),
            })
            .collect();
        // Untimed passes over every system first (a tenth of its count each), for at
        // least WARM_UP: the first run was slower than the later ones because a
        // forked child started on its parent's CPU (the parent, fresh or idle till
        // then, looked unloaded to the scheduler) and both spun there, until the
        // scheduler's load averages caught up, a few hundred ms in (see the report).
        if !args.smoke {
            let warm_start = std::time::Instant::now();
            while warm_start.elapsed() < WARM_UP {
                for m in &measured {
                    progress.show(w, 0, plan.runs, &format!("warm-up: {}", m.system.name));
                    let n = (m.count / 10).max(20);
                    (m.system.measure)(n, n / 10).map_err(|e| {
                        progress.done();
                        format!(
                            "{} {} ({}) warm-up: {e}",
                            w.name(),
                            m.system.name,
                            m.system.config
                        )
                    })?;
                }
            }
        }
        for run in 0..plan.runs {
            progress.show(w, run, plan.runs, "");
            // Rotate the starting system each run, so none always runs first.
            let n = measured.len();
            for k in 0..n {
                let m = &mut measured[(k + run) % n];
                progress.show(
                    w,
                    run,
                    plan.runs,
                    &format!("{} ({})", m.system.name, m.system.config),
                );
                let warm = m.count / 10;
                let sample = (m.system.measure)(m.count, warm).map_err(|e| {
                    progress.done();
                    format!("{} {} ({}): {e}", w.name(), m.system.name, m.system.config)
                })?;
                m.runs.push(sample);
            }
        }
        results.push(WorkloadResult {
            workload: w,
            systems: measured,
        });
    }
    progress.done();
    drop(hogs);
    let elapsed = started.elapsed();
    let report = report::Report::new(&plan, machine, python, results, elapsed);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.tables());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())?;
        eprintln!("bench: plot written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
