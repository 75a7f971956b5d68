//! The systems of each workload: shmproc's Queue, ByteQueue and Pipe in their
//! configurations, the floor and ceilings, the OS, crossbeam-channel, Python.

use super::baselines::{
    atomic_bounce, futex_wakes, memcpy, os_pipe, pipe_wakes, raw_ring_best, raw_ring_one_way,
    read_stamp, stamp, stream_one_way, stream_round_trips,
};
use super::harness::{
    BenchResult, Sample, err, expect_seq, mpmc, mpmc_threads, one_way, one_way_threads,
    round_trips, round_trips_threads, wakes,
};
use super::system::{Kind, System, sys};
use super::{Plan, Workload};
use shmproc::pipe::pipe_with_capacity;
use shmproc::wait::Spin;
use shmproc::{ByteQueue, Queue, pipe};
use std::os::unix::net::UnixStream;

const K4: usize = 4096;
const M1: usize = 1 << 20;

fn reference(mut s: System) -> System {
    s.reference = true;
    s
}

fn spin_label(spin: Spin) -> &'static str {
    if spin == Spin::NONE { "sleep" } else { "spin" }
}

/// A round trip in the sleep-immediately configuration is two wake-ups (tens of
/// microseconds): fewer trips. Throughput rows move as many messages in either
/// configuration, so their rates compare like for like: with a tenth of the
/// messages, MPMC's sleep config ran for a few milliseconds, its rate was mostly
/// start-up, and it read 0.17–0.41× the spin config against 0.91–0.93× with the
/// same count.
fn rtt_divisor(spin: Spin) -> u64 {
    if spin == Spin::NONE { 10 } else { 1 }
}

/// Every system of workload `w`; Python's only if `python` is set.
pub fn systems(w: Workload, plan: &Plan, python: bool) -> Vec<System> {
    let mut v = match w {
        Workload::T8 => t8(),
        Workload::T4K => t4k(),
        Workload::T1M => t1m(),
        Workload::Rtt => rtt(),
        Workload::Mpmc => mpmc_systems(),
        Workload::Wake => wake(plan),
        Workload::DictGet1K | Workload::DictGet1M | Workload::DictInsert | Workload::DictMixed => {
            super::dicts::systems(w, plan)
        }
        Workload::PoolMap | Workload::PoolMap1 | Workload::PoolApply => super::pools::systems(w),
    };
    #[cfg(feature = "peers")]
    v.extend(super::peers::systems(w));
    if python {
        v.extend(python_systems(w, plan));
    }
    v
}

fn queue_u64(spin: Spin) -> System {
    sys(
        Kind::Shmproc,
        "Queue<u64> (1024)",
        spin_label(spin),
        1,
        move |n, warm| {
            let q = Queue::<u64>::new(1024).map_err(err)?;
            q.set_spin(spin);
            one_way(
                n,
                warm,
                8,
                |i| q.put(i).map_err(err),
                || q.get().map_err(err),
            )
        },
    )
}

fn t8() -> Vec<System> {
    vec![
        reference(queue_u64(Spin::DEFAULT)),
        queue_u64(Spin::NONE),
        sys(
            Kind::Shmproc,
            "Queue<u64> (1024)",
            "batch 64: put_many/get_many",
            1,
            |n, warm| {
                let q = Queue::<u64>::new(1024).map_err(err)?;
                let mut batch = Vec::with_capacity(64);
                let mut got = Vec::with_capacity(64);
                let mut next = 0;
                one_way(
                    n,
                    warm,
                    8,
                    |i| {
                        batch.push(i);
                        if batch.len() == 64 || i + 1 == n {
                            q.put_many(&batch).map_err(err)?;
                            batch.clear();
                        }
                        Ok(())
                    },
                    || {
                        if next == got.len() {
                            got.clear();
                            next = 0;
                            q.get_many(&mut got, 64).map_err(err)?;
                        }
                        next += 1;
                        Ok(got[next - 1])
                    },
                )
            },
        ),
        sys(
            Kind::Shmproc,
            "ByteQueue (1024 × 8 B)",
            "spin, put/get_into",
            1,
            |n, warm| {
                let q = ByteQueue::new(1024, 8).map_err(err)?;
                let mut buf = Vec::with_capacity(8);
                one_way(
                    n,
                    warm,
                    8,
                    |i| q.put(&i.to_le_bytes()).map_err(err),
                    || {
                        q.get_into(&mut buf).map_err(err)?;
                        read_stamp(&buf)
                    },
                )
            },
        ),
        pipe_u64(Spin::DEFAULT),
        pipe_u64(Spin::NONE),
        sys(
            Kind::Ceiling,
            "raw SPSC ring (1024 × 8 B)",
            "busy-spin",
            1,
            |n, warm| raw_ring_one_way(n, warm, 8, 1024),
        ),
        sys(Kind::Os, "OS pipe", "framed, 1 write/msg", 10, |n, warm| {
            let (r, w) = os_pipe()?;
            stream_one_way(n, warm, 8, r, w)
        }),
        sys(
            Kind::Os,
            "Unix stream socket",
            "framed, 1 write/msg",
            10,
            |n, warm| {
                let (a, b) = UnixStream::pair().map_err(err)?;
                stream_one_way(n, warm, 8, a, b)
            },
        ),
        sys(
            Kind::Library,
            "crossbeam-channel bounded(1024)",
            "2 threads",
            1,
            |n, warm| {
                let (tx, rx) = crossbeam_channel::bounded::<u64>(1024);
                one_way_threads(
                    n,
                    warm,
                    8,
                    |i| tx.send(i).map_err(err),
                    || rx.recv().map_err(err),
                )
            },
        ),
    ]
}

fn pipe_u64(spin: Spin) -> System {
    sys(
        Kind::Shmproc,
        "Pipe (256 KiB)",
        &format!("{}, send/recv u64", spin_label(spin)),
        1,
        move |n, warm| {
            let (rx, tx) = pipe(false).map_err(err)?;
            rx.set_spin(spin);
            tx.set_spin(spin);
            one_way(
                n,
                warm,
                8,
                |i| tx.send(&i).map_err(err),
                || rx.recv::<u64>().map_err(err),
            )
        },
    )
}

/// How a `Queue<[u8; 4096]>` row moves its items.
#[derive(Clone, Copy)]
enum Access {
    /// `put` of a copy of the item, `get` by value.
    Value,
    /// `put_ref` copies from the caller's item into the ring, `get_into` from the
    /// ring into the caller's (no zeroing, no moves).
    Ref,
    /// As iceoryx2 is driven: the producer loans a slot and writes the whole item
    /// there, the consumer reads its stamps where it lies.
    InPlace,
}

fn queue_4k(spin: Spin, access: Access) -> System {
    let how = match access {
        Access::Value => "",
        Access::Ref => ", put_ref/get_into",
        Access::InPlace => ", loan/get_ref (in place)",
    };
    sys(
        Kind::Shmproc,
        "Queue<[u8; 4096]> (256)",
        &format!("{}{how}", spin_label(spin)),
        1,
        move |n, warm| {
            let q = Queue::<[u8; K4]>::new(256).map_err(err)?;
            q.set_spin(spin);
            let mut msg = [0u8; K4];
            let mut got = [0u8; K4];
            let bytes = K4 as u64;
            match access {
                Access::Value => one_way(
                    n,
                    warm,
                    bytes,
                    |i| {
                        stamp(&mut msg, i);
                        q.put(msg).map_err(err)
                    },
                    || read_stamp(&q.get().map_err(err)?),
                ),
                Access::Ref => one_way(
                    n,
                    warm,
                    bytes,
                    |i| {
                        stamp(&mut msg, i);
                        q.put_ref(&msg).map_err(err)
                    },
                    || {
                        q.get_into(&mut got).map_err(err)?;
                        read_stamp(&got)
                    },
                ),
                Access::InPlace => one_way(
                    n,
                    warm,
                    bytes,
                    |i| {
                        stamp(&mut msg, i);
                        let mut slot = q.loan().map_err(err)?;
                        *slot = msg;
                        slot.commit();
                        Ok(())
                    },
                    || read_stamp(&*q.get_ref().map_err(err)?),
                ),
            }
        },
    )
}

/// ByteQueue put/get_into (`zero_copy` false) or loan/get_ref: the producer fills
/// the whole message in the loaned slot, the consumer reads it in place.
fn byte_queue(slots: usize, size: usize, zero_copy: bool, divisor: u64) -> System {
    let name = format!("ByteQueue ({slots} × 4 KiB)");
    let config = if zero_copy {
        "spin, loan/get_ref (in place)"
    } else {
        "spin, put/get_into"
    };
    sys(Kind::Shmproc, &name, config, divisor, move |n, warm| {
        let q = ByteQueue::new(slots, K4).map_err(err)?;
        let mut msg = vec![0u8; size];
        let mut buf = Vec::with_capacity(size);
        if zero_copy {
            one_way(
                n,
                warm,
                size as u64,
                |i| {
                    stamp(&mut msg, i);
                    let mut loan = q.loan(size).map_err(err)?;
                    loan.buf().copy_from_slice(&msg);
                    loan.commit();
                    Ok(())
                },
                || read_stamp(&q.get_ref().map_err(err)?),
            )
        } else {
            one_way(
                n,
                warm,
                size as u64,
                |i| {
                    stamp(&mut msg, i);
                    q.put(&msg).map_err(err)
                },
                || {
                    q.get_into(&mut buf).map_err(err)?;
                    read_stamp(&buf)
                },
            )
        }
    })
}

fn pipe_bytes(capacity: usize, size: usize, spin: Spin, divisor: u64) -> System {
    let name = format!("Pipe ({} KiB)", capacity >> 10);
    let config = format!("{}, send_bytes/recv_bytes_into", spin_label(spin));
    sys(Kind::Shmproc, &name, &config, divisor, move |n, warm| {
        let (rx, tx) = pipe_with_capacity(capacity, false).map_err(err)?;
        rx.set_spin(spin);
        tx.set_spin(spin);
        let mut msg = vec![0u8; size];
        let mut buf = vec![0u8; size];
        one_way(
            n,
            warm,
            size as u64,
            |i| {
                stamp(&mut msg, i);
                tx.send_bytes(&msg).map_err(err)
            },
            || {
                let len = rx.recv_bytes_into(&mut buf, 0).map_err(err)?;
                read_stamp(&buf[..len])
            },
        )
    })
}

fn streams(size: usize, divisor: u64) -> Vec<System> {
    vec![
        sys(
            Kind::Os,
            "OS pipe",
            "framed, 1 write/msg",
            divisor,
            move |n, warm| {
                let (r, w) = os_pipe()?;
                stream_one_way(n, warm, size, r, w)
            },
        ),
        sys(
            Kind::Os,
            "Unix stream socket",
            "framed, 1 write/msg",
            divisor,
            move |n, warm| {
                let (a, b) = UnixStream::pair().map_err(err)?;
                stream_one_way(n, warm, size, a, b)
            },
        ),
    ]
}

fn t4k() -> Vec<System> {
    let mut v = vec![
        reference(queue_4k(Spin::DEFAULT, Access::Value)),
        queue_4k(Spin::NONE, Access::Value),
        queue_4k(Spin::DEFAULT, Access::Ref),
        queue_4k(Spin::DEFAULT, Access::InPlace),
        byte_queue(256, K4, false, 1),
        byte_queue(256, K4, true, 1),
        pipe_bytes(1 << 20, K4, Spin::DEFAULT, 1),
        pipe_bytes(1 << 20, K4, Spin::NONE, 10),
        sys(
            Kind::Ceiling,
            "raw SPSC ring (256 × 4 KiB)",
            "busy-spin, best of copy in + out, read in place, 16-slot frees",
            1,
            |n, warm| raw_ring_best(n, warm, K4, 256),
        ),
    ];
    v.extend(streams(K4, 4));
    v.push(sys(
        Kind::Library,
        "crossbeam-channel bounded(256)",
        "2 threads, [u8; 4096] by value",
        1,
        |n, warm| {
            let (tx, rx) = crossbeam_channel::bounded::<[u8; K4]>(256);
            let mut msg = [0u8; K4];
            one_way_threads(
                n,
                warm,
                K4 as u64,
                move |i| {
                    stamp(&mut msg, i);
                    tx.send(msg).map_err(err)
                },
                || read_stamp(&rx.recv().map_err(err)?),
            )
        },
    ));
    v
}

fn t1m() -> Vec<System> {
    let mut v = vec![
        reference(byte_queue(1024, M1, false, 1)),
        byte_queue(1024, M1, true, 1),
        pipe_bytes(4 << 20, M1, Spin::DEFAULT, 1),
        pipe_bytes(4 << 20, M1, Spin::NONE, 1),
        sys(
            Kind::Ceiling,
            "raw SPSC ring (4 × 1 MiB)",
            "busy-spin, copy in + out",
            1,
            |n, warm| raw_ring_one_way(n, warm, M1, 4),
        ),
        sys(
            Kind::Ceiling,
            "memcpy 1 MiB",
            "1 thread, no IPC",
            1,
            |n, warm| memcpy(n, warm, M1),
        ),
    ];
    v.extend(streams(M1, 2));
    v.push(sys(
        Kind::Library,
        "crossbeam-channel bounded(4)",
        "2 threads, Box moved (no copy)",
        1,
        |n, warm| {
            let (tx, rx) = crossbeam_channel::bounded::<Box<[u8]>>(4);
            let (back_tx, back_rx) = crossbeam_channel::bounded::<Box<[u8]>>(8);
            let mut pool: Vec<Box<[u8]>> =
                (0..6).map(|_| vec![0u8; M1].into_boxed_slice()).collect();
            one_way_threads(
                n,
                warm,
                M1 as u64,
                move |i| {
                    let mut b = match pool.pop() {
                        Some(b) => b,
                        None => back_rx.recv().map_err(err)?,
                    };
                    stamp(&mut b, i);
                    tx.send(b).map_err(err)
                },
                || {
                    let b = rx.recv().map_err(err)?;
                    let seq = read_stamp(&b);
                    let _ = back_tx.try_send(b);
                    seq
                },
            )
        },
    ));
    v
}

fn rtt() -> Vec<System> {
    let pipe_rtt = |spin: Spin| {
        sys(
            Kind::Shmproc,
            "Pipe (256 KiB, duplex)",
            &format!("{}, send/recv u64", spin_label(spin)),
            rtt_divisor(spin),
            move |n, warm| {
                let (a, b) = pipe(true).map_err(err)?;
                a.set_spin(spin);
                b.set_spin(spin);
                round_trips(
                    n,
                    warm,
                    |i| {
                        expect_seq(b.recv::<u64>().map_err(err)?, i)?;
                        b.send(&i).map_err(err)
                    },
                    |i| {
                        a.send(&i).map_err(err)?;
                        expect_seq(a.recv::<u64>().map_err(err)?, i)
                    },
                )
            },
        )
    };
    let queue_rtt = |spin: Spin| {
        sys(
            Kind::Shmproc,
            "Queue<u64> pair (16)",
            spin_label(spin),
            rtt_divisor(spin),
            move |n, warm| {
                let (there, back) = (
                    Queue::<u64>::new(16).map_err(err)?,
                    Queue::<u64>::new(16).map_err(err)?,
                );
                there.set_spin(spin);
                back.set_spin(spin);
                round_trips(
                    n,
                    warm,
                    |i| {
                        expect_seq(there.get().map_err(err)?, i)?;
                        back.put(i).map_err(err)
                    },
                    |i| {
                        there.put(i).map_err(err)?;
                        expect_seq(back.get().map_err(err)?, i)
                    },
                )
            },
        )
    };
    vec![
        reference(pipe_rtt(Spin::DEFAULT)),
        pipe_rtt(Spin::NONE),
        queue_rtt(Spin::DEFAULT),
        queue_rtt(Spin::NONE),
        sys(
            Kind::Floor,
            "one atomic bounced",
            "busy-spin",
            1,
            atomic_bounce,
        ),
        sys(
            Kind::Os,
            "OS pipe pair",
            "framed, blocking read",
            5,
            |n, warm| stream_round_trips(n, warm, os_pipe()?, os_pipe()?),
        ),
        sys(
            Kind::Os,
            "Unix stream socket",
            "framed, blocking read",
            5,
            |n, warm| {
                let (a, b) = UnixStream::pair().map_err(err)?;
                let (a2, b2) = (a.try_clone().map_err(err)?, b.try_clone().map_err(err)?);
                stream_round_trips(n, warm, (b, a), (a2, b2))
            },
        ),
        sys(
            Kind::Library,
            "crossbeam-channel bounded(1) pair",
            "2 threads",
            1,
            |n, warm| {
                let (there_tx, there_rx) = crossbeam_channel::bounded::<u64>(1);
                let (back_tx, back_rx) = crossbeam_channel::bounded::<u64>(1);
                round_trips_threads(
                    n,
                    warm,
                    move |i| {
                        expect_seq(there_rx.recv().map_err(err)?, i)?;
                        back_tx.send(i).map_err(err)
                    },
                    |i| {
                        there_tx.send(i).map_err(err)?;
                        expect_seq(back_rx.recv().map_err(err)?, i)
                    },
                )
            },
        ),
    ]
}

fn mpmc_systems() -> Vec<System> {
    let queue = |spin: Spin| {
        sys(
            Kind::Shmproc,
            "Queue<u64> (1024)",
            &format!("{}, 2+2 processes", spin_label(spin)),
            1,
            move |n, _| {
                let q = Queue::<u64>::new(1024).map_err(err)?;
                q.set_spin(spin);
                mpmc(n, |i| q.put(i).map_err(err), || q.get().map_err(err))
            },
        )
    };
    vec![
        reference(queue(Spin::DEFAULT)),
        queue(Spin::NONE),
        sys(
            Kind::Library,
            "crossbeam-channel bounded(1024)",
            "2+2 threads",
            1,
            |n, _| {
                let (tx, rx) = crossbeam_channel::bounded::<u64>(1024);
                mpmc_threads(n, |i| tx.send(i).map_err(err), || rx.recv().map_err(err))
            },
        ),
    ]
}

fn wake(plan: &Plan) -> Vec<System> {
    let gap = plan.wake_gap;
    let queue = move |spin: Spin| {
        sys(
            Kind::Shmproc,
            "Queue<[u64; 2]> (16)",
            spin_label(spin),
            1,
            move |n, warm| {
                let q = Queue::<[u64; 2]>::new(16).map_err(err)?;
                q.set_spin(spin);
                wakes(
                    n,
                    warm,
                    gap,
                    |i, ts| q.put([i, ts]).map_err(err),
                    || {
                        let [i, ts] = q.get().map_err(err)?;
                        Ok((i, ts))
                    },
                )
            },
        )
    };
    let pipe_wake = move |spin: Spin| {
        sys(
            Kind::Shmproc,
            "Pipe (256 KiB)",
            spin_label(spin),
            1,
            move |n, warm| {
                let (rx, tx) = pipe(false).map_err(err)?;
                rx.set_spin(spin);
                tx.set_spin(spin);
                wakes(
                    n,
                    warm,
                    gap,
                    |i, ts| tx.send(&[i, ts]).map_err(err),
                    || {
                        let [i, ts] = rx.recv::<[u64; 2]>().map_err(err)?;
                        Ok((i, ts))
                    },
                )
            },
        )
    };
    vec![
        reference(queue(Spin::DEFAULT)),
        queue(Spin::NONE),
        pipe_wake(Spin::DEFAULT),
        pipe_wake(Spin::NONE),
        sys(
            Kind::Floor,
            "bare FUTEX_WAIT/FUTEX_WAKE",
            "shared futex word",
            1,
            move |n, warm| futex_wakes(n, warm, gap),
        ),
        sys(Kind::Os, "OS pipe", "blocking read", 1, move |n, warm| {
            pipe_wakes(n, warm, gap)
        }),
    ]
}

const SCRIPT: &str = include_str!("bench.py");

/// Python's multiprocessing Queue and Pipe, Manager().dict() and Pool(2), driven by
/// the embedded script.
fn python_systems(w: Workload, plan: &Plan) -> Vec<System> {
    let (name, size, divisor): (&str, usize, u64) = match w {
        Workload::T8 => ("T8", 8, 100),
        Workload::T4K => ("T4K", K4, 50),
        Workload::T1M => ("T1M", M1, 5),
        Workload::Rtt => ("RTT", 8, 10),
        Workload::Mpmc => ("MPMC", 8, 100),
        Workload::Wake => return Vec::new(),
        // For the dicts, SIZE is the number of keys.
        Workload::DictGet1K | Workload::DictGet1M | Workload::DictInsert | Workload::DictMixed => {
            let keys = super::dicts::keys(w, plan) as usize;
            let (script, how) = match w {
                Workload::DictGet1K | Workload::DictGet1M => {
                    ("DGET", "d[k] through the proxy, 1 process")
                }
                Workload::DictInsert => ("DINS", "d[k] = v through the proxy, 1 process"),
                _ => ("DMIX", "90% get / 10% set, 2 processes"),
            };
            return vec![sys(
                Kind::Python,
                "multiprocessing.Manager().dict()",
                how,
                200,
                move |n, warm| run_python(script, "manager", n, warm, keys),
            )];
        }
        Workload::PoolMap | Workload::PoolMap1 | Workload::PoolApply => {
            let (script, how, divisor) = match w {
                Workload::PoolMap => ("PMAP", "map, default chunksize", 1),
                Workload::PoolMap1 => ("PMAP1", "map(chunksize=1)", 5),
                _ => ("PAPPLY", "apply", 5),
            };
            return vec![sys(
                Kind::Python,
                "multiprocessing.Pool(2)",
                how,
                divisor,
                move |n, warm| run_python(script, "pool", n, warm, 8),
            )];
        }
    };
    let mut v = vec![("queue", "multiprocessing.Queue", "put/get, pickled")];
    if w != Workload::Mpmc {
        let how = if size <= 8 {
            "send/recv, pickled"
        } else {
            "send_bytes/recv_bytes_into"
        };
        v.push(("pipe", "multiprocessing.Pipe", how));
    }
    v.into_iter()
        .map(|(system, label, how)| {
            sys(Kind::Python, label, how, divisor, move |n, warm| {
                run_python(name, system, n, warm, size)
            })
        })
        .collect()
}

/// Whether `python3` runs here.
pub fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("-c")
        .arg("import multiprocessing")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_python(workload: &str, system: &str, n: u64, warm: u64, size: usize) -> BenchResult<Sample> {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args([
            workload,
            system,
            &n.to_string(),
            &warm.to_string(),
            &size.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("python3 printed {:?}: {e}", text.trim()))?;
    if let Some(e) = v.get("error") {
        return Err(format!("python3: {e}"));
    }
    if !out.status.success() {
        return Err(format!("python3 exited with {}", out.status));
    }
    if let Some(lat) = v.get("lat_ns").and_then(|l| l.as_array()) {
        let mut h = super::harness::histogram();
        for ns in lat.iter().filter_map(|x| x.as_u64()) {
            h.saturating_record(ns.max(1));
        }
        return Ok(Sample::Latency(h));
    }
    let num = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_f64())
            .ok_or(format!("python3: no {k:?} in {text}"))
    };
    Ok(Sample::Rate {
        msgs: num("msgs")? as u64,
        msg_bytes: num("bytes")? as u64,
        secs: num("secs")?.max(1e-9),
    })
}
