//! What a system of the bench is (the vocabulary the lists in `systems` and `peers`
//! share, so neither imports the other): its kind, its row, how it is measured.

use super::harness::{BenchResult, Sample};

/// Who a system is, for the reader of the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// shmproc itself.
    Shmproc,
    /// The lower bound of latency (an atomic bounced between processes, a bare
    /// futex wake).
    Floor,
    /// The upper bound of throughput (raw ring, memcpy).
    Ceiling,
    /// The kernel's IPC.
    Os,
    /// Another library, between threads or processes.
    Library,
    /// Python's multiprocessing.
    Python,
    /// Another Rust IPC library between the same two processes (`--features peers`).
    #[cfg(feature = "peers")]
    Peer,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Shmproc => "shmproc",
            Kind::Floor => "floor",
            Kind::Ceiling => "ceiling",
            Kind::Os => "OS",
            Kind::Library => "library",
            Kind::Python => "Python",
            #[cfg(feature = "peers")]
            Kind::Peer => "peer",
        }
    }
}

pub type Measure = Box<dyn Fn(u64, u64) -> BenchResult<Sample>>;

/// One row of a workload's table.
pub struct System {
    /// What it is ("Queue<u64>", "OS pipe").
    pub name: String,
    /// How it is driven ("spin", "sleep", "batch 64", "2 threads").
    pub config: String,
    pub kind: Kind,
    /// The shmproc row the others are divided by.
    pub reference: bool,
    /// Messages (or trips, or wake-ups) per run are the workload's count divided by
    /// this.
    pub divisor: u64,
    /// Runs the measurement with (count, warm-up count).
    pub measure: Measure,
}

pub(super) fn sys(
    kind: Kind,
    name: &str,
    config: &str,
    divisor: u64,
    measure: impl Fn(u64, u64) -> BenchResult<Sample> + 'static,
) -> System {
    System {
        name: name.into(),
        config: config.into(),
        kind,
        reference: false,
        divisor,
        measure: Box::new(measure),
    }
}
