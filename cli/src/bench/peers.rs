//! `--features peers`: other Rust IPC libraries between the same two forked
//! processes — iceoryx2's publish-subscribe (zero-copy loans in shared memory) and
//! ipc-channel (serde over Unix sockets).
//!
//! iceoryx2 handles are never shared across fork: each process builds its own node
//! and ports after the fork, in an order (subscribers before publishers, the
//! publisher kept alive until the consumer is done) that loses nothing. Every run
//! uses fresh service names, and every node and port is dropped before its process
//! ends, so iceoryx2 removes its files.

use super::Workload;
use super::baselines::{read_stamp, stamp};
use super::harness::{
    BenchResult, Ctl, Sample, Shm, consume, err, expect_seq, finish, one_way, round_trips, spawn,
    time_trips,
};
use super::system::{Kind, System, sys};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;
use std::fmt::Debug;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const K4: usize = 4096;

/// How long a process waits for its peer (a message, a ready flag) before it gives up.
const PATIENCE: Duration = Duration::from_secs(20);

/// The peers' systems of workload `w`.
pub fn systems(w: Workload) -> Vec<System> {
    match w {
        Workload::T8 => vec![
            sys(
                Kind::Peer,
                "iceoryx2 pub-sub<u64> (1024)",
                "publish-subscribe, loan, busy-poll",
                1,
                |n, warm| iox_one_way::<u64>(n, warm, 8, 1024, |i| i, |v| Ok(*v)),
            ),
            sys(
                Kind::Peer,
                "ipc-channel IpcSender<u64>",
                "bincode, blocking recv",
                10,
                |n, warm| {
                    let (tx, rx) = ipc_channel::ipc::channel::<u64>().map_err(err)?;
                    one_way(
                        n,
                        warm,
                        8,
                        |i| tx.send(i).map_err(err),
                        || rx.recv().map_err(err),
                    )
                },
            ),
        ],
        Workload::T4K => vec![
            sys(
                Kind::Peer,
                "iceoryx2 pub-sub<[u8; 4096]> (256)",
                "publish-subscribe, loan, busy-poll",
                1,
                |n, warm| {
                    iox_one_way::<[u8; K4]>(
                        n,
                        warm,
                        K4 as u64,
                        256,
                        |i| {
                            let mut msg = [0u8; K4];
                            stamp(&mut msg, i);
                            msg
                        },
                        |m| read_stamp(m),
                    )
                },
            ),
            sys(
                Kind::Peer,
                "ipc-channel IpcBytesSender",
                "send(&[u8]) / recv() → Vec",
                10,
                |n, warm| {
                    let (tx, rx) = ipc_channel::ipc::bytes_channel().map_err(err)?;
                    let mut msg = vec![0u8; K4];
                    one_way(
                        n,
                        warm,
                        K4 as u64,
                        |i| {
                            stamp(&mut msg, i);
                            tx.send(&msg).map_err(err)
                        },
                        || read_stamp(&rx.recv().map_err(err)?),
                    )
                },
            ),
        ],
        Workload::Rtt => vec![
            sys(
                Kind::Peer,
                "iceoryx2 pub-sub<u64> pair (16)",
                "publish-subscribe, loan, busy-poll",
                1,
                iox_round_trips,
            ),
            sys(
                Kind::Peer,
                "ipc-channel IpcSender<u64> pair",
                "bincode, blocking recv",
                5,
                |n, warm| {
                    let (there_tx, there_rx) = ipc_channel::ipc::channel::<u64>().map_err(err)?;
                    let (back_tx, back_rx) = ipc_channel::ipc::channel::<u64>().map_err(err)?;
                    round_trips(
                        n,
                        warm,
                        |i| {
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
        ],
        _ => Vec::new(),
    }
}

type Svc = ipc::Service;

/// A service name no other run (or earlier process) uses.
fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "shmproc-bench/{}-{}-{}/{tag}",
        std::process::id(),
        super::harness::now_ns(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A node of this process; iceoryx2 leaves the signals to the benchmark.
fn node() -> BenchResult<Node<Svc>> {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| set_log_level(LogLevel::Error));
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| format!("iceoryx2 node: {e}"))
}

/// The publish-subscribe service `name`: no history, no overflow (a full
/// subscriber buffer blocks the publisher, nothing is lost), one publisher and one
/// subscriber, a subscriber buffer of `buffer` samples. Created by the first
/// process, opened by the second.
fn service<P: Debug + ZeroCopySend + 'static>(
    node: &Node<Svc>,
    name: &str,
    buffer: usize,
    create: bool,
) -> BenchResult<PortFactory<Svc, P, ()>> {
    let name: ServiceName = name.try_into().map_err(err)?;
    let b = node
        .service_builder(&name)
        .publish_subscribe::<P>()
        .history_size(0)
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(buffer)
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2);
    if create {
        b.create().map_err(|e| format!("iceoryx2 service: {e}"))
    } else {
        b.open().map_err(|e| format!("iceoryx2 service: {e}"))
    }
}

fn publisher<P: Debug + ZeroCopySend + 'static>(
    s: &PortFactory<Svc, P, ()>,
) -> BenchResult<Publisher<Svc, P, ()>> {
    s.publisher_builder()
        .unable_to_deliver_strategy(UnableToDeliverStrategy::Block)
        .create()
        .map_err(|e| format!("iceoryx2 publisher: {e}"))
}

fn subscriber<P: Debug + ZeroCopySend + 'static>(
    s: &PortFactory<Svc, P, ()>,
    buffer: usize,
) -> BenchResult<Subscriber<Svc, P, ()>> {
    s.subscriber_builder()
        .buffer_size(buffer)
        .create()
        .map_err(|e| format!("iceoryx2 subscriber: {e}"))
}

/// Writes `value` into a loaned sample and sends it.
#[inline]
fn publish<P: Debug + ZeroCopySend + 'static>(
    p: &Publisher<Svc, P, ()>,
    value: P,
) -> BenchResult<()> {
    let sample = p.loan_uninit().map_err(err)?;
    sample.write_payload(value).send().map_err(err)?;
    Ok(())
}

/// Busy-polls `sub` for the next sample and returns `read` of its payload (in
/// place; the sample goes back to the publisher after).
#[inline]
fn take<P: Debug + ZeroCopySend + 'static>(
    sub: &Subscriber<Svc, P, ()>,
    read: impl Fn(&P) -> BenchResult<u64>,
) -> BenchResult<u64> {
    let mut misses = 0u32;
    let mut since = None;
    loop {
        if let Some(sample) = sub.receive().map_err(err)? {
            return read(&sample);
        }
        misses = misses.wrapping_add(1);
        if misses % 4096 == 0 && since.get_or_insert_with(Instant::now).elapsed() > PATIENCE {
            return Err(format!("iceoryx2: no message for {PATIENCE:?}"));
        }
        std::hint::spin_loop();
    }
}

/// Spins until `flag` is set, or gives up after [`PATIENCE`].
fn wait_flag(flag: &AtomicU64, what: &str) -> BenchResult<()> {
    let t0 = Instant::now();
    while flag.load(Ordering::Acquire) == 0 {
        if t0.elapsed() > PATIENCE {
            return Err(format!("iceoryx2: the other process never got {what}"));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// The flags of the iceoryx2 set-up: `a` — the parent's ports exist, `b` — the
/// child's, `results[0]` — the parent is done with the child's samples.
fn done_flag(ctl: &Ctl) -> &AtomicU64 {
    &ctl.results[0]
}

/// One-way stream: the child publishes `make(i)` for `i` in `0..total`, this process
/// subscribes (buffer `buffer`) and checks `read(payload)` against `i`.
fn iox_one_way<P: Debug + ZeroCopySend + 'static>(
    total: u64,
    warm: u64,
    msg_bytes: u64,
    buffer: usize,
    make: fn(u64) -> P,
    read: fn(&P) -> BenchResult<u64>,
) -> BenchResult<Sample> {
    let shm = Shm::new(0)?;
    let ctl = shm.ctl();
    let name = unique_name("one-way");
    let child = spawn(|| {
        wait_flag(&*ctl.a, "its subscriber ready")?;
        let node = node()?;
        let svc = service::<P>(&node, &name, buffer, false)?;
        let publ = publisher(&svc)?;
        (0..total).try_for_each(|i| publish(&publ, make(i)))?;
        // The samples live in the publisher's memory: keep it until they are read.
        wait_flag(done_flag(ctl), "to the last message")
    })?;
    let res = (|| {
        let node = node()?;
        let svc = service::<P>(&node, &name, buffer, true)?;
        let sub = subscriber(&svc, buffer)?;
        ctl.a.store(1, Ordering::Release);
        let secs = consume(total, warm, || take(&sub, read));
        done_flag(ctl).store(1, Ordering::Release);
        secs
    })();
    finish(vec![child], res).map(|secs| Sample::Rate {
        msgs: total - warm,
        msg_bytes,
        secs: secs.max(1e-9),
    })
}

/// Round trips over two services, "there" (parent → child) and "back".
fn iox_round_trips(trips: u64, warm: u64) -> BenchResult<Sample> {
    const BUF: usize = 16;
    let shm = Shm::new(0)?;
    let ctl = shm.ctl();
    let (there, back) = (unique_name("there"), unique_name("back"));
    let child = spawn(|| {
        wait_flag(&*ctl.a, "its services and subscriber ready")?;
        let node = node()?;
        let there = service::<u64>(&node, &there, BUF, false)?;
        let back = service::<u64>(&node, &back, BUF, false)?;
        let sub = subscriber(&there, BUF)?;
        let publ = publisher(&back)?;
        ctl.b.store(1, Ordering::Release);
        for i in 0..trips {
            expect_seq(take(&sub, |v| Ok(*v))?, i)?;
            publish(&publ, i)?;
        }
        wait_flag(done_flag(ctl), "to the last echo")
    })?;
    let res = (|| {
        let node = node()?;
        let there = service::<u64>(&node, &there, BUF, true)?;
        let back = service::<u64>(&node, &back, BUF, true)?;
        let sub = subscriber(&back, BUF)?;
        ctl.a.store(1, Ordering::Release);
        wait_flag(&*ctl.b, "its subscriber and publisher ready")?;
        let publ = publisher(&there)?;
        let h = time_trips(trips, warm, |i| {
            publish(&publ, i)?;
            expect_seq(take(&sub, |v| Ok(*v))?, i)
        });
        done_flag(ctl).store(1, Ordering::Release);
        h
    })();
    finish(vec![child], res).map(Sample::Latency)
}
