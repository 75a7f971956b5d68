//! Model checks of the eventcount (STYLE rule 5): no wake-up is ever lost.
//!
//! Under `--cfg shmproc_model` the eventcount's words are scheduling-point atomics and
//! its sleep is the model's futex (see [`crate::shim`]): a model thread that sleeps
//! and is never woken stays blocked, and shuttle reports the deadlock. So each test
//! below fails if any interleaving of a waiter's register / re-check / sleep with a
//! notifier's change / look at `waiters` / wake lets the waiter sleep through the
//! change it waits for.
//!
//! Not covered: waits with a stall check or a deadline (`wait_until_checked`,
//! `wait_any`, timed waits). Their sleeps end at the next check or the deadline, and
//! shuttle does not model time, so in the model they poll and no lost wake-up could
//! show; the registration, re-check and wake they share with the waits above are the
//! same code.
//!
//! Run: `RUSTFLAGS="--cfg shmproc_model" cargo test --release --lib model_tests`.

use super::{EventCount, Spin};
use crate::shim::model::{self, check};
use crate::shim::{AtomicU64, Ordering};
use std::sync::Arc;

/// One waiter, one notifier that sets a flag and notifies: the waiter always returns.
#[test]
fn a_notify_after_the_change_always_wakes_the_waiter() {
    check(|| {
        let ec = Arc::new(EventCount::new());
        let flag = Arc::new(AtomicU64::new(0));
        let (ec2, flag2) = (ec.clone(), flag.clone());
        let waiter = model::spawn(move || {
            ec2.wait_until_with(Spin::NONE, None, || {
                (flag2.load(Ordering::SeqCst) == 1).then_some(())
            })
        });
        flag.store(1, Ordering::SeqCst);
        ec.notify_all();
        assert_eq!(waiter.join().unwrap(), Some(Ok(())));
    });
}

/// Takes an item if there is one (a lost CAS race retries: a wait's `ready` must
/// not report "nothing" while the condition holds).
fn take_item(items: &AtomicU64) -> Option<()> {
    loop {
        let n = items.load(Ordering::SeqCst);
        if n == 0 {
            return None;
        }
        if items
            .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Some(());
        }
    }
}

/// Two waiters each take one item; the producer adds two items, each with a
/// `notify_one`: both waiters always get theirs (a single wake is never spent on a
/// waiter that has nothing to do while the other sleeps on).
#[test]
fn notify_one_per_item_wakes_enough_waiters() {
    check(|| {
        let ec = Arc::new(EventCount::new());
        let items = Arc::new(AtomicU64::new(0));
        let take = |ec: Arc<EventCount>, items: Arc<AtomicU64>| {
            model::spawn(move || ec.wait_until_with(Spin::NONE, None, || take_item(&items)))
        };
        let a = take(ec.clone(), items.clone());
        let b = take(ec.clone(), items.clone());
        for _ in 0..2 {
            items.fetch_add(1, Ordering::SeqCst);
            ec.notify_one();
        }
        assert_eq!(a.join().unwrap(), Some(Ok(())));
        assert_eq!(b.join().unwrap(), Some(Ok(())));
        assert_eq!(items.load(Ordering::SeqCst), 0);
    });
}

/// Two waiters each wait twice for an item; the producer adds four, each with a
/// `notify_one`. Exercises both wakes of a notify (bit cleared with one sleeper;
/// epoch bumped, then the bit cleared once a wake found nobody asleep, with two) and
/// a waiter registering again while the other was woken but has not yet left: every
/// wait still returns.
#[test]
fn repeated_waits_with_a_cleared_bit_are_always_woken() {
    check(|| {
        let ec = Arc::new(EventCount::new());
        let items = Arc::new(AtomicU64::new(0));
        let take_two = |ec: Arc<EventCount>, items: Arc<AtomicU64>| {
            model::spawn(move || {
                for _ in 0..2 {
                    ec.wait_until_with(Spin::NONE, None, || take_item(&items))
                        .expect("no deadline");
                }
            })
        };
        let a = take_two(ec.clone(), items.clone());
        let b = take_two(ec.clone(), items.clone());
        for _ in 0..4 {
            items.fetch_add(1, Ordering::SeqCst);
            ec.notify_one();
        }
        assert_eq!(a.join().unwrap(), Some(()));
        assert_eq!(b.join().unwrap(), Some(()));
        assert_eq!(items.load(Ordering::SeqCst), 0);
    });
}
