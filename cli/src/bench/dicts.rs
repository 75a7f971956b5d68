//! The DICT workloads' systems: shmproc's `Dict<u64, u64>` against a
//! `RwLock<HashMap>` and a `DashMap` between threads of one process (the in-process
//! ceiling and a concurrent map), and LMDB through heed with `--features lmdb`.
//!
//! Every key `k` holds [`value_of`]`(k)`; every get checks it, so a torn or lost
//! write fails the run.

use super::harness::{BenchResult, err, key_of, ops, two_workers, two_workers_threads};
use super::system::{Kind, System, sys};
use super::{Plan, Workload};
use dashmap::DashMap;
use shmproc::Dict;
use std::collections::HashMap;
use std::sync::RwLock;

/// Key plus value.
const RECORD: u64 = 16;

/// The value stored under `k`.
#[inline]
pub fn value_of(k: u64) -> u64 {
    k.wrapping_mul(3).wrapping_add(1)
}

#[cold]
fn wrong(k: u64, got: Option<u64>) -> String {
    format!("key {k}: got {got:?}, expected {}", value_of(k))
}

#[inline]
fn check(k: u64, got: Option<u64>) -> BenchResult<()> {
    if got == Some(value_of(k)) {
        Ok(())
    } else {
        Err(wrong(k, got))
    }
}

/// Whether step `i` of the mixed workload is an insert (one in ten).
#[inline]
pub fn mixed_is_insert(i: u64) -> bool {
    i % 10 == 9
}

/// The key step `i` of worker `w` of the mixed workload touches.
#[inline]
pub fn mixed_key(w: u64, i: u64, keys: u64) -> u64 {
    key_of((w << 48) | i, keys)
}

/// How many keys each DICT workload spreads over.
pub fn keys(w: Workload, plan: &Plan) -> u64 {
    match w {
        Workload::DictGet1K => 1_000,
        Workload::DictGet1M => plan.dict_big_keys,
        _ => plan.dict_big_keys / 10,
    }
}

fn shm_dict(keys: u64) -> BenchResult<Dict<u64, u64>> {
    let d = Dict::<u64, u64>::new().map_err(err)?;
    for k in 0..keys {
        d.insert(k, value_of(k)).map_err(err)?;
    }
    Ok(d)
}

fn rw_map(keys: u64) -> RwLock<HashMap<u64, u64>> {
    RwLock::new((0..keys).map(|k| (k, value_of(k))).collect())
}

fn dash_map(keys: u64) -> DashMap<u64, u64> {
    (0..keys).map(|k| (k, value_of(k))).collect()
}

fn rw_get(m: &RwLock<HashMap<u64, u64>>, k: u64) -> BenchResult<()> {
    let got = m
        .read()
        .map_err(|_| "poisoned".to_string())?
        .get(&k)
        .copied();
    check(k, got)
}

fn rw_insert(m: &RwLock<HashMap<u64, u64>>, k: u64) -> BenchResult<()> {
    m.write()
        .map_err(|_| "poisoned".to_string())?
        .insert(k, value_of(k));
    Ok(())
}

/// The systems of DICT workload `w` (not Python's).
pub fn systems(w: Workload, plan: &Plan) -> Vec<System> {
    let keys = keys(w, plan);
    let mut v = match w {
        Workload::DictGet1K | Workload::DictGet1M => get_systems(keys),
        Workload::DictInsert => insert_systems(keys),
        Workload::DictMixed => mixed_systems(keys),
        _ => Vec::new(),
    };
    #[cfg(feature = "lmdb")]
    v.extend(super::lmdb::systems(w, keys));
    if let Some(first) = v.first_mut() {
        first.reference = true;
    }
    v
}

fn get_systems(keys: u64) -> Vec<System> {
    vec![
        sys(
            Kind::Shmproc,
            "Dict<u64, u64>",
            "get, 1 process",
            1,
            move |n, warm| {
                let d = shm_dict(keys)?;
                ops(n, warm, RECORD, |i| {
                    let k = key_of(i, keys);
                    check(k, d.get(&k).map_err(err)?)
                })
            },
        ),
        sys(
            Kind::Ceiling,
            "RwLock<HashMap<u64, u64>>",
            "read().get, 1 thread",
            1,
            move |n, warm| {
                let m = rw_map(keys);
                ops(n, warm, RECORD, |i| rw_get(&m, key_of(i, keys)))
            },
        ),
        sys(
            Kind::Library,
            "DashMap<u64, u64>",
            "get, 1 thread",
            1,
            move |n, warm| {
                let m = dash_map(keys);
                ops(n, warm, RECORD, |i| {
                    let k = key_of(i, keys);
                    check(k, m.get(&k).map(|r| *r))
                })
            },
        ),
    ]
}

fn insert_systems(keys: u64) -> Vec<System> {
    vec![
        sys(
            Kind::Shmproc,
            "Dict<u64, u64>",
            "insert, 1 process",
            1,
            move |n, warm| {
                let d = Dict::<u64, u64>::new().map_err(err)?;
                ops(n, warm, RECORD, |i| {
                    let k = key_of(i, keys);
                    d.insert(k, value_of(k)).map(drop).map_err(err)
                })
            },
        ),
        sys(
            Kind::Ceiling,
            "RwLock<HashMap<u64, u64>>",
            "write().insert, 1 thread",
            1,
            move |n, warm| {
                let m = RwLock::new(HashMap::new());
                ops(n, warm, RECORD, |i| rw_insert(&m, key_of(i, keys)))
            },
        ),
        sys(
            Kind::Library,
            "DashMap<u64, u64>",
            "insert, 1 thread",
            1,
            move |n, warm| {
                let m = DashMap::new();
                ops(n, warm, RECORD, |i| {
                    let k = key_of(i, keys);
                    m.insert(k, value_of(k));
                    Ok(())
                })
            },
        ),
    ]
}

fn mixed_systems(keys: u64) -> Vec<System> {
    vec![
        sys(
            Kind::Shmproc,
            "Dict<u64, u64>",
            "90% get / 10% insert, 2 processes",
            1,
            move |n, _| {
                let d = shm_dict(keys)?;
                two_workers(n / 2, RECORD, |w, i| {
                    let k = mixed_key(w, i, keys);
                    if mixed_is_insert(i) {
                        d.insert(k, value_of(k)).map(drop).map_err(err)
                    } else {
                        check(k, d.get(&k).map_err(err)?)
                    }
                })
            },
        ),
        sys(
            Kind::Ceiling,
            "RwLock<HashMap<u64, u64>>",
            "90% get / 10% insert, 2 threads",
            1,
            move |n, _| {
                let m = rw_map(keys);
                two_workers_threads(n / 2, RECORD, |w, i| {
                    let k = mixed_key(w, i, keys);
                    if mixed_is_insert(i) {
                        rw_insert(&m, k)
                    } else {
                        rw_get(&m, k)
                    }
                })
            },
        ),
        sys(
            Kind::Library,
            "DashMap<u64, u64>",
            "90% get / 10% insert, 2 threads",
            1,
            move |n, _| {
                let m = dash_map(keys);
                two_workers_threads(n / 2, RECORD, |w, i| {
                    let k = mixed_key(w, i, keys);
                    if mixed_is_insert(i) {
                        m.insert(k, value_of(k));
                        Ok(())
                    } else {
                        check(k, m.get(&k).map(|r| *r))
                    }
                })
            },
        ),
    ]
}
