//! `--features lmdb`: LMDB through heed as a peer of `Dict` — a memory-mapped
//! B+tree file with lock-free readers and one writer at a time. One read
//! transaction per get and one write transaction per insert (what a `Dict` call
//! is: a consistent single-key step), `NO_SYNC` (no fsync per commit, as a `Dict`
//! never syncs). Each process opens the environment itself: LMDB handles are not
//! shared across fork.

use super::Workload;
use super::dicts::{mixed_is_insert, mixed_key, value_of};
use super::harness::{BenchResult, err, key_of, ops, two_workers};
use super::system::{Kind, System, sys};
use heed::types::U64;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, byteorder::NativeEndian};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

type Db = Database<U64<NativeEndian>, U64<NativeEndian>>;

/// A fresh directory for one measurement's environment, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> BenchResult<Dir> {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "shmproc-bench-lmdb-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(err)?;
        Ok(Dir(path))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(path: &Path) -> BenchResult<(Env, Db)> {
    let mut options = EnvOpenOptions::new();
    options.map_size(1 << 30).max_dbs(1);
    // SAFETY: NO_SYNC only gives up durability after an OS crash (the bench's
    // files are thrown away); the directory is fresh, local and used by no one
    // else; every process opens it after the fork, none holds a transaction
    // across one.
    let env = unsafe {
        options.flags(EnvFlags::NO_SYNC);
        options.open(path)
    }
    .map_err(err)?;
    let mut wtxn = env.write_txn().map_err(err)?;
    let db: Db = env.create_database(&mut wtxn, None).map_err(err)?;
    wtxn.commit().map_err(err)?;
    Ok((env, db))
}

/// Closes `env` and waits until LMDB has let go of it.
fn close(env: Env) {
    env.prepare_for_closing().wait();
}

fn fill(env: &Env, db: Db, keys: u64) -> BenchResult<()> {
    let mut wtxn = env.write_txn().map_err(err)?;
    for k in 0..keys {
        db.put(&mut wtxn, &k, &value_of(k)).map_err(err)?;
    }
    wtxn.commit().map_err(err)
}

fn get(env: &Env, db: Db, k: u64) -> BenchResult<()> {
    let rtxn = env.read_txn().map_err(err)?;
    let got = db.get(&rtxn, &k).map_err(err)?;
    if got == Some(value_of(k)) {
        Ok(())
    } else {
        Err(format!("key {k}: got {got:?}, expected {}", value_of(k)))
    }
}

fn insert(env: &Env, db: Db, k: u64) -> BenchResult<()> {
    let mut wtxn = env.write_txn().map_err(err)?;
    db.put(&mut wtxn, &k, &value_of(k)).map_err(err)?;
    wtxn.commit().map_err(err)
}

const NAME: &str = "LMDB (heed)";

/// LMDB's systems of DICT workload `w` over `keys` keys.
pub fn systems(w: Workload, keys: u64) -> Vec<System> {
    let s = match w {
        Workload::DictGet1K | Workload::DictGet1M => sys(
            Kind::Library,
            NAME,
            "1 read txn per get, 1 process",
            1,
            move |n, warm| {
                let dir = Dir::new()?;
                let (env, db) = open(&dir.0)?;
                fill(&env, db, keys)?;
                let res = ops(n, warm, 16, |i| get(&env, db, key_of(i, keys)));
                close(env);
                res
            },
        ),
        Workload::DictInsert => sys(
            Kind::Library,
            NAME,
            "1 write txn per insert, NO_SYNC, 1 process",
            1,
            move |n, warm| {
                let dir = Dir::new()?;
                let (env, db) = open(&dir.0)?;
                let res = ops(n, warm, 16, |i| insert(&env, db, key_of(i, keys)));
                close(env);
                res
            },
        ),
        Workload::DictMixed => sys(
            Kind::Library,
            NAME,
            "90% get / 10% insert, 1 txn each, NO_SYNC, 2 processes",
            1,
            move |n, _| {
                let dir = Dir::new()?;
                let (env, db) = open(&dir.0)?;
                fill(&env, db, keys)?;
                close(env);
                let path = dir.0.clone();
                // Opened lazily in each worker process, after the fork.
                let opened = std::cell::OnceCell::new();
                two_workers(n / 2, 16, |wk, i| {
                    let (env, db) = match opened.get() {
                        Some(x) => x,
                        None => {
                            let x = open(&path)?;
                            opened.get_or_init(|| x)
                        }
                    };
                    let k = mixed_key(wk, i, keys);
                    if mixed_is_insert(i) {
                        insert(env, *db, k)
                    } else {
                        get(env, *db, k)
                    }
                })
            },
        ),
        _ => return Vec::new(),
    };
    vec![s]
}
