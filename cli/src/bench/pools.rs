//! The POOL workloads' systems: shmproc's `Pool` with two worker processes against
//! rayon's work-stealing pool of two threads (the in-process ceiling). Every result
//! is checked.

use super::Workload;
use super::harness::{BenchResult, Sample, err, histogram, time_trips};
use super::system::{Kind, System, sys};
use rayon::prelude::*;
use shmproc::Pool;
use std::time::Instant;

/// The trivial function every system maps.
pub fn work(x: u64) -> u64 {
    x.wrapping_mul(2).wrapping_add(1)
}

/// Worker processes (and rayon threads).
const WORKERS: usize = 2;

fn check(items: &[u64], got: &[u64]) -> BenchResult<()> {
    if got.len() != items.len() {
        return Err(format!("{} results for {} items", got.len(), items.len()));
    }
    match items.iter().zip(got).position(|(x, r)| work(*x) != *r) {
        None => Ok(()),
        Some(i) => Err(format!(
            "item {i}: got {}, expected {}",
            got[i],
            work(items[i])
        )),
    }
}

/// One warm-up map of `warm` items, then one timed map of `n` items.
fn timed_map(
    n: u64,
    warm: u64,
    mut map: impl FnMut(&[u64]) -> BenchResult<Vec<u64>>,
) -> BenchResult<Sample> {
    let warm_items: Vec<u64> = (0..warm.max(1)).collect();
    check(&warm_items, &map(&warm_items)?)?;
    let items: Vec<u64> = (0..n).collect();
    let t0 = Instant::now();
    let got = map(&items)?;
    let secs = t0.elapsed().as_secs_f64();
    check(&items, &got)?;
    Ok(Sample::Rate {
        msgs: n,
        msg_bytes: 8,
        secs: secs.max(1e-9),
    })
}

fn rayon_pool() -> BenchResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .map_err(err)
}

/// `chunk`: None for the default chunksize, Some(1) for one item per task.
fn map_systems(chunk: Option<usize>) -> Vec<System> {
    let (pool_config, rayon_config) = match chunk {
        None => ("map, default chunksize, 2 workers", "par_iter, 2 threads"),
        Some(_) => (
            "map_chunked(1), 2 workers",
            "par_iter().with_max_len(1), 2 threads",
        ),
    };
    vec![
        sys(Kind::Shmproc, "Pool", pool_config, 1, move |n, warm| {
            let pool = Pool::new(WORKERS).map_err(err)?;
            timed_map(n, warm, |items| match chunk {
                None => pool.map(work, items.iter().copied()).map_err(err),
                Some(c) => pool
                    .map_chunked(work, items.iter().copied(), c)
                    .map_err(err),
            })
        }),
        sys(
            Kind::Ceiling,
            "rayon ThreadPool",
            rayon_config,
            1,
            move |n, warm| {
                let pool = rayon_pool()?;
                timed_map(n, warm, |items| {
                    Ok(pool.install(|| match chunk {
                        None => items.par_iter().map(|x| work(*x)).collect(),
                        Some(c) => items.par_iter().with_max_len(c).map(|x| work(*x)).collect(),
                    }))
                })
            },
        ),
    ]
}

fn apply_systems() -> Vec<System> {
    vec![
        sys(Kind::Shmproc, "Pool", "apply, 2 workers", 1, |n, warm| {
            let pool = Pool::new(WORKERS).map_err(err)?;
            let h = time_trips(n, warm, |i| {
                let r = pool.apply(work, i).map_err(err)?;
                if r == work(i) {
                    Ok(())
                } else {
                    Err(format!("apply({i}) returned {r}"))
                }
            })?;
            Ok(Sample::Latency(h))
        }),
        sys(
            Kind::Ceiling,
            "rayon ThreadPool",
            "install (a call on a pool thread), 2 threads",
            1,
            |n, warm| {
                let pool = rayon_pool()?;
                let mut h = histogram();
                for i in 0..n {
                    let t0 = Instant::now();
                    let r = pool.install(|| work(std::hint::black_box(i)));
                    let ns = t0.elapsed().as_nanos() as u64;
                    if r != work(i) {
                        return Err(format!("install({i}) returned {r}"));
                    }
                    if i >= warm {
                        h.saturating_record(ns.max(1));
                    }
                }
                Ok(Sample::Latency(h))
            },
        ),
    ]
}

/// The systems of POOL workload `w` (not Python's).
pub fn systems(w: Workload) -> Vec<System> {
    let mut v = match w {
        Workload::PoolMap => map_systems(None),
        Workload::PoolMap1 => map_systems(Some(1)),
        Workload::PoolApply => apply_systems(),
        _ => Vec::new(),
    };
    if let Some(first) = v.first_mut() {
        first.reference = true;
    }
    v
}
