//! The targets the bench reports as met or not: data, one entry per goal, each a
//! ratio of two rows of one workload's table, taken run by run (paired).
//!
//! A goal is met when the ratio (shmproc's row ÷ the other row) is at least `goal` for
//! throughput workloads, at most `goal` for latency workloads. The ratio is the
//! median of the runs' ratios, or, for a goal that must hold in every run, the worst
//! of them.

use super::Workload;
use super::system::Kind;

/// Which row of a workload's table a goal looks at.
pub enum Pick {
    /// The workload's reference row (marked `*`).
    Reference,
    /// The first row whose name starts with this.
    NameStarts(&'static str),
    /// The row with exactly this name.
    Name(&'static str),
    /// The first row whose name and config start with these.
    NameConfig(&'static str, &'static str),
    /// The first row of this kind (the floor, the ceiling).
    Kind(Kind),
}

impl Pick {
    /// Whether the row (name, config, kind, reference) is the one picked.
    pub fn matches(&self, name: &str, config: &str, kind: Kind, reference: bool) -> bool {
        match *self {
            Pick::Reference => reference,
            Pick::NameStarts(p) => name.starts_with(p),
            Pick::Name(n) => name == n,
            Pick::NameConfig(n, c) => name.starts_with(n) && config.starts_with(c),
            Pick::Kind(k) => kind == k,
        }
    }
}

/// Which figure of the two rows is compared.
pub enum Figure {
    /// The workload's primary figure (msgs/s, or p50 for latency).
    Primary,
    /// The 99th percentile (latency workloads).
    P99,
}

/// One target.
pub struct Goal {
    /// What the reader sees.
    pub what: &'static str,
    pub workload: Workload,
    /// shmproc's row.
    pub mine: Pick,
    /// The row it is divided by.
    pub other: Pick,
    pub goal: f64,
    pub figure: Figure,
    /// Which of the runs' ratios is judged.
    pub over: Over,
}

/// Which of the runs' paired ratios a goal judges.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Their median.
    Median,
    /// The worst of them: the goal must hold in every run.
    EveryRun,
}

/// Every goal, in the order the report shows them: those of the second performance
/// round (issue 16: close to the hardware, ahead of every peer at every size), with
/// the first round's that it did not tighten.
pub const GOALS: &[Goal] = &[
    Goal {
        what: "T8 Queue<u64> 1P1C ≥ 0.7× raw ring",
        workload: Workload::T8,
        mine: Pick::Reference,
        other: Pick::Kind(Kind::Ceiling),
        goal: 0.7,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T8 Pipe u64 one-way ≥ 0.7× raw ring",
        workload: Workload::T8,
        mine: Pick::NameConfig("Pipe", "spin"),
        other: Pick::Kind(Kind::Ceiling),
        goal: 0.7,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T8 Queue<u64> 1P1C ≥ 1.5× crossbeam-channel",
        workload: Workload::T8,
        mine: Pick::Reference,
        other: Pick::NameStarts("crossbeam"),
        goal: 1.5,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T8 Queue<u64> 1P1C ≥ 20× iceoryx2",
        workload: Workload::T8,
        mine: Pick::Reference,
        other: Pick::NameStarts("iceoryx2"),
        goal: 20.0,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T8 Queue<u64> ≥ 100× Python multiprocessing.Queue",
        workload: Workload::T8,
        mine: Pick::Reference,
        other: Pick::Name("multiprocessing.Queue"),
        goal: 100.0,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T4K Queue<[u8; 4096]> ≥ 2× iceoryx2, every run",
        workload: Workload::T4K,
        mine: Pick::Reference,
        other: Pick::NameStarts("iceoryx2"),
        goal: 2.0,
        figure: Figure::Primary,
        over: Over::EveryRun,
    },
    Goal {
        what: "T4K Queue<[u8; 4096]> in place ≥ 2× iceoryx2 (in place), every run",
        workload: Workload::T4K,
        mine: Pick::NameConfig("Queue<[u8; 4096]>", "spin, loan/get_ref"),
        other: Pick::NameStarts("iceoryx2"),
        goal: 2.0,
        figure: Figure::Primary,
        over: Over::EveryRun,
    },
    Goal {
        what: "T4K Queue<[u8; 4096]> ≥ 1× crossbeam-channel",
        workload: Workload::T4K,
        mine: Pick::Reference,
        other: Pick::NameStarts("crossbeam"),
        goal: 1.0,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T1M ByteQueue ≥ 0.9× memcpy",
        workload: Workload::T1M,
        mine: Pick::Reference,
        other: Pick::NameStarts("memcpy"),
        goal: 0.9,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "T1M Pipe ≥ 0.9× memcpy",
        workload: Workload::T1M,
        mine: Pick::NameConfig("Pipe", "spin"),
        other: Pick::NameStarts("memcpy"),
        goal: 0.9,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "MPMC Queue<u64> ahead of crossbeam-channel",
        workload: Workload::Mpmc,
        mine: Pick::Reference,
        other: Pick::NameStarts("crossbeam"),
        goal: 1.0,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "MPMC Queue<u64> sleep config ≥ 0.7× spin config",
        workload: Workload::Mpmc,
        mine: Pick::NameConfig("Queue", "sleep"),
        other: Pick::Reference,
        goal: 0.7,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "RTT Pipe p50 ≤ 1.3× atomic floor",
        workload: Workload::Rtt,
        mine: Pick::Reference,
        other: Pick::Kind(Kind::Floor),
        goal: 1.3,
        figure: Figure::Primary,
        over: Over::Median,
    },
    Goal {
        what: "RTT Pipe p99 ≤ 1.5× atomic floor",
        workload: Workload::Rtt,
        mine: Pick::Reference,
        other: Pick::Kind(Kind::Floor),
        goal: 1.5,
        figure: Figure::P99,
        over: Over::Median,
    },
    Goal {
        what: "WAKE Queue p50 (spin config) ≤ 1.1× bare futex",
        workload: Workload::Wake,
        mine: Pick::Reference,
        other: Pick::Kind(Kind::Floor),
        goal: 1.1,
        figure: Figure::Primary,
        over: Over::Median,
    },
];
