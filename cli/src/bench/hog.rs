//! `shmproc bench --hog`: busy processes beside the measurement, to see how each
//! system behaves on a machine whose cores are all taken (another build running, a
//! noisy neighbour), where a blocking consumer must win a CPU back after every sleep.
//!
//! Each hog is a forked child that spins on arithmetic until the bench ends (it is
//! killed then, or with the bench through `PR_SET_PDEATHSIG`). Processes, not threads
//! of the bench: a forked child of the bench then never inherits a hog, and the hogs
//! are not part of the bench's `membarrier` registration.

use super::harness::{BenchResult, spawn};
use shmproc::Process;

/// The running hogs; killed and reaped on drop.
pub struct Hogs {
    procs: Vec<Process>,
}

impl Hogs {
    /// Starts `n` hogs; `n == 0` means one per online CPU.
    pub fn start(n: usize) -> BenchResult<Hogs> {
        let n = if n == 0 { online_cpus() } else { n };
        let mut procs = Vec::with_capacity(n);
        for _ in 0..n {
            procs.push(spawn(|| {
                let mut x = 1u64;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })?);
        }
        Ok(Hogs { procs })
    }

    pub fn count(&self) -> usize {
        self.procs.len()
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.join();
        }
    }
}

/// Online CPUs (at least 1).
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
