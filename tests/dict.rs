//! Dict across real processes: the seed program, concurrent writers checked against a
//! model, exact fetch_add sums, writers killed under load, growth followed by a
//! reader, iteration during writes, and bad input (wrong types, oversize values,
//! corrupt images).

mod common;

use common::{Children, TestName, Words, join_or_kill};
use shmproc::dict::{Dict, DictOptions, ReadError, WriteError};
use shmproc::segment::{CreateOptions, OpenError};
use shmproc::sync::Lock;
use shmproc::{Object, Process};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn the_seed_program_five_processes_set_their_procnum() {
    // Python: def f(procnum, return_dict): return_dict[procnum] = procnum
    let d = Dict::<u32, u32>::new().unwrap();
    let mut children = Children(
        (0..5)
            .map(|procnum| {
                Process::spawn_returning(|| -> i32 {
                    match d.insert(procnum, procnum) {
                        Ok(None) => 0,
                        _ => 1,
                    }
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(children.join_all(), [0; 5]);
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, [0, 1, 2, 3, 4]);
    assert_eq!(d.len(), 5);
}

#[test]
fn a_named_dict_is_shared_by_name() {
    let name = TestName::new("dict-named");
    let d = Dict::<String, Vec<u8>>::create(&name).unwrap();
    d.insert("from parent".to_string(), b"hello".to_vec())
        .unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        let Ok(opened) = Dict::<String, Vec<u8>>::open(&name) else {
            return 1;
        };
        if opened.get("from parent").ok().flatten().as_deref() != Some(b"hello") {
            return 2;
        }
        match opened.insert("from child".to_string(), vec![1, 2, 3]) {
            Ok(None) => 0,
            _ => 3,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert_eq!(d.get("from child").unwrap(), Some(vec![1, 2, 3]));
    let (again, created) =
        Dict::<String, Vec<u8>>::open_or_create(&name, DictOptions::new()).unwrap();
    assert!(!created);
    assert_eq!(again.len(), 2);
    let rows = shmproc::inspect::object_state(d.segment());
    assert!(
        rows.iter().any(|(k, v)| *k == "entries" && v == "2"),
        "{rows:?}"
    );
    drop((d, again));
    assert!(!std::path::Path::new(&name.path()).exists());
}

/// What process `p` of the model test does, as (key, Some(value) = insert, None =
/// remove), on its own keys `p * KEYS ..`.
fn script(p: u64, ops: usize, keys: u64) -> Vec<(u64, Option<u64>)> {
    let mut rng = Rng(0x9e37_79b9 + p);
    (0..ops)
        .map(|i| {
            let key = p * keys + rng.below(keys);
            if rng.below(4) == 0 {
                (key, None)
            } else {
                (key, Some(key * 1_000_000 + i as u64))
            }
        })
        .collect()
}

#[test]
fn concurrent_writers_match_a_model() {
    const PROCS: u64 = 4;
    const KEYS: u64 = 500;
    let ops = if cfg!(debug_assertions) {
        4_000
    } else {
        20_000
    };
    let d = Dict::<u64, u64>::new().unwrap();
    let mut children = Children(
        (0..PROCS)
            .map(|p| {
                let d = d.clone();
                Process::spawn_returning(move || -> i32 {
                    let mut mine = HashMap::new();
                    for (key, op) in script(p, ops, KEYS) {
                        let (got, want) = match op {
                            Some(v) => (d.insert(key, v), mine.insert(key, v)),
                            None => (d.remove(&key), mine.remove(&key)),
                        };
                        if got != Ok(want) {
                            eprintln!("key {key}: {got:?}, expected {want:?}");
                            return 1;
                        }
                        // Other processes' keys share buckets and tables with ours.
                        if d.get(&key) != Ok(mine.get(&key).copied()) {
                            return 2;
                        }
                    }
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(children.join_all(), [0; PROCS as usize]);
    let mut model = HashMap::new();
    for p in 0..PROCS {
        for (key, op) in script(p, ops, KEYS) {
            match op {
                Some(v) => model.insert(key, v),
                None => model.remove(&key),
            };
        }
    }
    let mut items = d.items().unwrap();
    items.sort();
    let mut expected: Vec<_> = model.into_iter().collect();
    expected.sort();
    assert_eq!(d.len(), expected.len());
    assert_eq!(items, expected);
}

#[test]
fn fetch_add_from_four_processes_sums_exactly() {
    const PROCS: u64 = 4;
    let rounds = if cfg!(debug_assertions) {
        2_000
    } else {
        20_000
    };
    let d = Dict::<u8, u64>::new().unwrap();
    let mut children = Children(
        (0..PROCS)
            .map(|p| {
                Process::spawn_returning(|| -> i32 {
                    for i in 0..rounds {
                        let key = (i % 3) as u8;
                        if d.fetch_add(&key, p + 1).is_err() {
                            return 1;
                        }
                        // update_with is the same atomic step for any value.
                        if d.update_with(9, |old| old.unwrap_or(0) + 1).is_err() {
                            return 2;
                        }
                    }
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(children.join_all(), [0; PROCS as usize]);
    let per_key = |key: u64| -> u64 {
        let hits = (0..rounds).filter(|i| i % 3 == key).count() as u64;
        hits * (1..=PROCS).sum::<u64>()
    };
    for key in 0..3u8 {
        assert_eq!(d.get(&key).unwrap(), Some(per_key(u64::from(key))));
    }
    assert_eq!(d.get(&9).unwrap(), Some(PROCS * rounds));
}

/// A value that says which key and write it is, of a length that varies with both,
/// so a torn or misplaced record cannot pass for a whole one.
fn chaos_value(key: u64, seq: u32) -> Vec<u8> {
    let len = 8 + ((key * 7 + u64::from(seq) * 13) % 300) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(key as u32).to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|i| (key as usize + seq as usize * 31 + i) as u8));
    v
}

fn chaos_seq(key: u64, v: &[u8]) -> Option<u32> {
    let k = u32::from_le_bytes(v.get(0..4)?.try_into().ok()?);
    let seq = u32::from_le_bytes(v.get(4..8)?.try_into().ok()?);
    (u64::from(k) == key && chaos_value(key, seq) == v).then_some(seq)
}

#[test]
fn writers_killed_under_load_leave_every_key_old_or_new() {
    const WRITERS: u64 = 3;
    const KEYS: u64 = 64;
    const ALL: u64 = WRITERS * KEYS;
    let rounds = if cfg!(debug_assertions) { 6 } else { 12 };
    let d = Dict::<u64, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(16 << 20)).unwrap();
    // Words 0..ALL: per key, the seq of its last write that returned. Word ALL + w:
    // 1 + the key writer w was writing when it was killed.
    let shared = Words::new((ALL + WRITERS) as usize);
    let mut rng = Rng(42);
    let mut seqs = vec![0u32; ALL as usize];
    for round in 0..rounds {
        for w in 0..WRITERS {
            shared.at((ALL + w) as usize).store(0, Ordering::SeqCst);
        }
        let mut children = Children(
            (0..WRITERS)
                .map(|w| {
                    let d = d.clone();
                    let shared = &shared;
                    let mut seq: Vec<u32> =
                        (0..KEYS).map(|k| seqs[(w * KEYS + k) as usize]).collect();
                    Process::spawn(move || {
                        let mut rng = Rng(round * 100 + w + 1);
                        loop {
                            let k = rng.below(KEYS);
                            let key = w * KEYS + k;
                            let next = seq[k as usize] + 1;
                            shared
                                .at((ALL + w) as usize)
                                .store(key as u32 + 1, Ordering::SeqCst);
                            if rng.below(8) == 0 {
                                // A removal and a re-insert: one write (seq) of the key.
                                let _ = d.remove(&key);
                            }
                            let _ = d.insert(key, chaos_value(key, next));
                            seq[k as usize] = next;
                            shared.at(key as usize).store(next, Ordering::SeqCst);
                        }
                    })
                    .unwrap()
                })
                .collect(),
        );
        std::thread::sleep(Duration::from_millis(20 + rng.below(60)));
        for child in &children.0 {
            child.kill().unwrap();
        }
        for child in &mut children.0 {
            child.join().unwrap();
        }
        // Every key: its last finished write, or the one in flight, whole.
        for key in 0..ALL {
            let finished = shared.at(key as usize).load(Ordering::SeqCst);
            let writer = key / KEYS;
            let in_flight =
                shared.at((ALL + writer) as usize).load(Ordering::SeqCst) == key as u32 + 1;
            match d.get(&key).unwrap() {
                None => assert!(
                    finished == 0 || in_flight,
                    "key {key}: lost (last finished write {finished})"
                ),
                Some(v) => {
                    let seq =
                        chaos_seq(key, &v).unwrap_or_else(|| panic!("key {key}: torn value {v:?}"));
                    assert!(
                        seq == finished || (in_flight && seq == finished + 1),
                        "key {key}: seq {seq}, last finished write {finished}, in flight {in_flight}"
                    );
                    seqs[key as usize] = seq;
                }
            }
            seqs[key as usize] = seqs[key as usize].max(finished);
        }
        // The next writer of every stripe recovers it; its writes work.
        for key in 0..ALL {
            let next = seqs[key as usize] + 1;
            d.insert(key, chaos_value(key, next)).unwrap();
            seqs[key as usize] = next;
            shared.at(key as usize).store(next, Ordering::SeqCst);
        }
        assert_eq!(d.len() as u64, ALL);
    }
    for key in 0..ALL {
        let v = d.get(&key).unwrap().unwrap();
        assert_eq!(chaos_seq(key, &v), Some(seqs[key as usize]));
    }
    let rows = shmproc::inspect::object_state(d.segment());
    assert!(
        rows.iter()
            .any(|(k, v)| *k == "entries" && *v == ALL.to_string()),
        "{rows:?}"
    );
}

#[test]
fn a_reader_follows_a_growing_dict() {
    let n: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let d = Dict::<u64, u64>::new().unwrap();
    let progress = Words::new(2);
    let mut children = Children(vec![
        Process::spawn_returning(|| -> i32 {
            for i in 0..n {
                if d.insert(i, i * 3).is_err() {
                    return 1;
                }
                if i % 1024 == 1023 {
                    progress.at(0).store((i + 1) as u32, Ordering::SeqCst);
                }
            }
            progress.at(0).store(n as u32, Ordering::SeqCst);
            0
        })
        .unwrap(),
        Process::spawn_returning(|| -> i32 {
            let mut rng = Rng(7);
            let mut checks = 0u32;
            loop {
                let upto = u64::from(progress.at(0).load(Ordering::SeqCst));
                if upto > 0 {
                    let i = rng.below(upto);
                    match d.get(&i) {
                        Ok(Some(v)) if v == i * 3 => {}
                        other => {
                            eprintln!("key {i} of {upto}: {other:?}");
                            return 1;
                        }
                    }
                    checks += 1;
                }
                if upto == n {
                    progress.at(1).store(checks, Ordering::SeqCst);
                    return 0;
                }
            }
        })
        .unwrap(),
    ]);
    assert_eq!(children.join_all(), [0, 0]);
    assert!(progress.at(1).load(Ordering::SeqCst) > 0);
    assert_eq!(d.len() as u64, n);
    for i in (0..n).step_by(997) {
        assert_eq!(d.get(&i).unwrap(), Some(i * 3));
    }
}

#[test]
fn iteration_during_writes_sees_each_key_once_and_whole() {
    const STABLE: u64 = 300;
    let d = Dict::<u64, Vec<u8>>::new().unwrap();
    for key in 0..STABLE {
        d.insert(key, chaos_value(key, 1)).unwrap();
    }
    let stop = Words::new(1);
    let mut children = Children(vec![
        Process::spawn(|| {
            let mut rng = Rng(3);
            let mut seq = 2;
            while stop.at(0).load(Ordering::SeqCst) == 0 {
                // Updates of stable keys, churn of others (inserts grow the index).
                let key = rng.below(STABLE);
                let _ = d.insert(key, chaos_value(key, seq));
                let other = STABLE + rng.below(5_000);
                if rng.below(2) == 0 {
                    let _ = d.insert(other, chaos_value(other, seq));
                } else {
                    let _ = d.remove(&other);
                }
                seq += 1;
            }
        })
        .unwrap(),
    ]);
    let start = Instant::now();
    let mut scans = 0;
    while scans < 20 || start.elapsed() < Duration::from_millis(300) {
        let items = d.items().unwrap();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in &items {
            assert!(seen.insert(*key), "key {key} seen twice");
            assert!(chaos_seq(*key, value).is_some(), "key {key}: torn value");
        }
        assert!(
            (0..STABLE).all(|k| seen.contains(&k)),
            "a stable key is missing"
        );
        scans += 1;
    }
    stop.at(0).store(1, Ordering::SeqCst);
    assert_eq!(children.join_all(), [0]);
}

#[test]
fn opening_with_other_types_or_kind_is_a_clear_error() {
    let name = TestName::new("dict-types");
    let _d = Dict::<u64, String>::create(&name).unwrap();
    match Dict::<u32, String>::open(&name) {
        Err(OpenError::IncompatibleLayout {
            what,
            expected,
            found,
            ..
        }) => {
            assert_eq!(what, "element type");
            assert!(
                expected.contains("u32") && found.contains("u64"),
                "{expected} / {found}"
            );
        }
        other => panic!("{other:?}"),
    }
    let lock_name = TestName::new("dict-kind");
    let _lock = Lock::create(&lock_name).unwrap();
    match Dict::<u64, String>::open(&lock_name) {
        Err(e @ OpenError::WrongKind { .. }) => {
            let text = e.to_string();
            assert!(text.contains("Dict") && text.contains("Lock"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversize_values_and_full_maps_are_clear_errors() {
    let d = Dict::<u32, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20)).unwrap();
    let err = d.insert(1, vec![0u8; 1 << 20]).unwrap_err();
    assert!(
        matches!(err, WriteError::TooLarge { max, .. } if max == d.max_record()),
        "{err}"
    );
    assert!(err.to_string().contains("larger than"), "{err}");
    assert_eq!(d.get(&1).unwrap(), None);
    // Fill one stripe's region: a clear Full, and the map still works after.
    let mut full = None;
    for i in 0..100_000u32 {
        if let Err(e) = d.insert(i, vec![1u8; 4000]) {
            full = Some(e);
            break;
        }
    }
    let full = full.expect("a 1 MiB dict holds fewer than 100 000 values of 4 KB");
    assert!(matches!(full, WriteError::Full(_)), "{full}");
    let some = d.keys().unwrap()[0];
    assert_eq!(d.remove(&some).unwrap(), Some(vec![1u8; 4000]));
    // A large value (MiBs) in a big enough dict.
    let big = Dict::<u8, Vec<u8>>::new().unwrap();
    let value: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    big.insert(0, &value).unwrap();
    assert_eq!(big.get(&0).unwrap(), Some(value));
}

#[test]
fn a_scribbled_image_gives_errors_not_panics() {
    let mut rng = Rng(11);
    for round in 0..40 {
        let d =
            Dict::<u64, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20)).unwrap();
        for i in 0..200u64 {
            d.insert(i, vec![i as u8; (i % 50) as usize]).unwrap();
        }
        let seg = d.segment();
        let base = seg.payload().as_ptr();
        // The map's header (not the lock words: a random owner word would only make
        // each lock wait for its liveness check), stripe states, the index, records.
        let spots: Vec<(usize, usize)> = vec![
            (0, 512),
            (1024 + 256, 512),
            (13312, 4096),
            (13312 + 4 * 16 * (1 << 17), 64 << 10),
        ];
        for _ in 0..(1 + round % 8) {
            let (start, len) = spots[rng.below(spots.len() as u64) as usize];
            let at = start + rng.below(len as u64) as usize / 8 * 8;
            let word = match rng.below(4) {
                0 => rng.next(),
                1 => rng.below(1 << 20),
                2 => 1,
                _ => 0,
            };
            assert!(at + 8 <= seg.payload_len());
            // SAFETY: in bounds of the payload (checked above), 8-aligned; the dict
            // reads these words only atomically.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(base.add(at).cast()) }
                .store(word, Ordering::Relaxed);
        }
        let _ = d.len();
        for i in 0..250u64 {
            match d.get(&i) {
                Ok(_) | Err(ReadError::Corrupt(_)) | Err(ReadError::Decode(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let _ = d.items();
        for i in 0..50u64 {
            let _ = d.insert(i + 1000, vec![1; 10]);
            let _ = d.remove(&i);
        }
        let _ = d.clear();
        let _ = shmproc::inspect::object_state(d.segment());
    }
}

#[test]
fn creating_reserves_little_and_names_are_removed() {
    let name = TestName::new("dict-sparse");
    let d = Dict::<u64, u64>::create_with(&name, DictOptions::new(), CreateOptions::new()).unwrap();
    let used = |path: &str| -> u64 {
        let out = std::process::Command::new("du")
            .arg("-k")
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // 40 GiB of address space, a few KiB of memory.
    assert!(used(&name.path()) < 1024, "{} KiB", used(&name.path()));
    for i in 0..10_000u64 {
        d.insert(i, i).unwrap();
    }
    assert!(used(&name.path()) < 64 << 10);
    drop(d);
    assert!(!std::path::Path::new(&name.path()).exists());
    // A small dict (its whole segment is below the size mappings are populated at)
    // stays sparse when created and when opened.
    let small = TestName::new("dict-small");
    let d = Dict::<u64, u64>::create_with(
        &small,
        DictOptions::new().max_bytes(1 << 20),
        CreateOptions::new(),
    )
    .unwrap();
    d.insert(1, 1).unwrap();
    let opened = Dict::<u64, u64>::open(&small).unwrap();
    assert_eq!(opened.get(&1).unwrap(), Some(1));
    assert!(used(&small.path()) < 1024, "{} KiB", used(&small.path()));
}

/// The fuzz target's body (fuzz/fuzz_targets/dict_image.rs) over random images:
/// whatever the map's memory holds, operations return (errors at worst).
#[test]
fn random_images_never_panic() {
    const STRIPE_STATES: usize = 1024;
    const INDEX_BASE: usize = 1024 + 16 * 768;
    const DATA_BASE: usize = INDEX_BASE + 4 * 16 * (1 << 17);
    let mut spots = Vec::new();
    spots.extend((0..64).map(|w| w * 8));
    for s in 0..16 {
        spots.extend((0..64).map(|w| STRIPE_STATES + s * 768 + 256 + w * 8));
    }
    spots.extend((0..256).map(|w| INDEX_BASE + w * 8));
    spots.extend((0..8192).map(|w| DATA_BASE + w * 8));
    let mut rng = Rng(0xfeed);
    let runs = if cfg!(debug_assertions) { 150 } else { 600 };
    for _ in 0..runs {
        let d =
            Dict::<u64, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20)).unwrap();
        for k in 0..rng.below(40) {
            let _ = d.insert(k, vec![k as u8; (k * 5 % 40) as usize]);
        }
        let seg = d.segment();
        let base = seg.payload().as_ptr();
        for _ in 0..1 + rng.below(30) {
            let at = spots[rng.below(spots.len() as u64) as usize];
            let word = match rng.below(5) {
                0 => rng.next(),
                1 => rng.below(1 << 24),
                2 => rng.below(4),
                3 => u64::MAX - rng.below(4),
                _ => (DATA_BASE as u64 + rng.below(1 << 16)) >> 3 | rng.below(31) << 40,
            };
            assert!(at + 8 <= seg.payload_len());
            // SAFETY: in bounds of the payload (checked above), 8-aligned; the dict
            // reads these words only atomically.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(base.add(at).cast()) }
                .store(word, Ordering::Relaxed);
        }
        let _ = d.len();
        for k in 0..40u64 {
            let _ = d.get(&k);
        }
        let _ = d.items();
        for k in 0..8u64 {
            let _ = d.insert(k * 3, vec![1; 12]);
            let _ = d.remove(&(k * 5));
        }
        let _ = d.clear();
        let _ = shmproc::inspect::object_state(seg);
    }
}

#[cfg(feature = "serde")]
#[test]
fn serde_values_cross_processes() {
    use shmproc::dict::Serde;
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Job {
        id: u32,
        tags: Vec<String>,
        weight: Option<f64>,
    }
    let d = Dict::<String, Serde<Job>>::new().unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        let job = Job {
            id: 7,
            tags: vec!["a".into(), "bc".into()],
            weight: Some(0.5),
        };
        match d.insert("job".to_string(), Serde(job)) {
            Ok(None) => 0,
            _ => 1,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    let Serde(job) = d.get("job").unwrap().unwrap();
    assert_eq!(job.tags, ["a", "bc"]);
    assert_eq!(job.weight, Some(0.5));
    assert_eq!(
        d.update_with("job".to_string(), |j| {
            let mut j = j.unwrap().0;
            j.id += 1;
            Serde(j)
        })
        .unwrap()
        .0
        .id,
        8
    );
}

#[test]
fn a_key_being_replaced_is_never_absent_or_torn() {
    const KEYS: u64 = 8;
    let d = Dict::<u64, Vec<u8>>::new().unwrap();
    for key in 0..KEYS {
        d.insert(key, chaos_value(key, 0)).unwrap();
    }
    let stop = Words::new(1);
    let mut children = Children(vec![
        Process::spawn(|| {
            // Replacements only: each frees the block the previous value used, which
            // the next replacement of the same size class reuses at once.
            let mut seq = 1;
            while stop.at(0).load(Ordering::SeqCst) == 0 {
                for key in 0..KEYS {
                    let _ = d.insert(key, chaos_value(key, seq));
                }
                seq += 1;
            }
        })
        .unwrap(),
    ]);
    let reads = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    for i in 0..reads {
        let key = i % KEYS;
        match d.get(&key).unwrap() {
            Some(v) => assert!(chaos_seq(key, &v).is_some(), "key {key}: torn value"),
            None => panic!("key {key} reported absent while only being replaced"),
        }
    }
    stop.at(0).store(1, Ordering::SeqCst);
    assert_eq!(children.join_all(), [0]);
}

#[test]
fn a_writer_killed_while_the_dict_grows_loses_nothing_finished() {
    let rounds = if cfg!(debug_assertions) { 6 } else { 12 };
    let d = Dict::<u64, u64>::new().unwrap();
    let done = Words::new(1);
    let mut rng = Rng(5);
    let mut start = 0u64;
    let mut extra = 0u64; // keys the parent inserted
    for round in 0..rounds {
        done.at(0).store(start as u32, Ordering::SeqCst);
        let mut children = Children(vec![
            Process::spawn(|| {
                // New keys only: the index doubles again and again (a resize holds
                // every stripe lock; the kill may land inside one).
                for i in start.. {
                    let _ = d.insert(i, i * 3);
                    done.at(0).store(i as u32 + 1, Ordering::SeqCst);
                }
            })
            .unwrap(),
        ]);
        std::thread::sleep(Duration::from_millis(10 + rng.below(90)));
        children.0[0].kill().unwrap();
        children.0[0].join().unwrap();
        let finished = u64::from(done.at(0).load(Ordering::SeqCst));
        // The parent writes next: it recovers whatever the writer was doing.
        d.insert(u64::MAX - round, 0).unwrap();
        extra += 1;
        for i in 0..finished {
            assert_eq!(
                d.get(&i).unwrap(),
                Some(i * 3),
                "round {round}: key {i} of {finished}"
            );
        }
        let in_flight = match d.get(&finished).unwrap() {
            None => 0,
            Some(v) => {
                assert_eq!(v, finished * 3);
                1
            }
        };
        assert_eq!(d.get(&(finished + 1)).unwrap(), None);
        assert_eq!(
            d.len() as u64,
            finished + in_flight + extra,
            "round {round}"
        );
        start = finished + in_flight;
    }
    assert!(start > 0);
}
