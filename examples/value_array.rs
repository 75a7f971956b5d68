//! The Rust twin of the `Value`/`Array` example in Python's multiprocessing
//! documentation (sharing state between processes):
//!
//! ```python
//! from multiprocessing import Process, Value, Array
//!
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! if __name__ == '__main__':
//!     num = Value('d', 0.0)
//!     arr = Array('i', range(10))
//!
//!     p = Process(target=f, args=(num, arr))
//!     p.start()
//!     p.join()
//!
//!     print(num.value)
//!     print(arr[:])
//! ```
//!
//! prints
//!
//! ```text
//! 3.1415927
//! [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
//! ```
//!
//! Run with `cargo run --example value_array`.

use shmproc::Process;
use shmproc::sync::AcquireError;
use shmproc::value::{Array, Value};

#[allow(
    clippy::approx_constant,
    reason = "the literal of Python's example, printed as such"
)]
const NUM: f64 = 3.1415927;

fn f(n: &Value<f64>, a: &Array<i32>) -> Result<(), AcquireError> {
    n.set(NUM)?;
    let mut a = a.lock().map_err(AcquireError::without_guard)?;
    a.update(|a| a.iter_mut().for_each(|x| *x = -*x));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;

    let mut p = Process::spawn_returning(|| f(&num, &arr))?;
    p.join()?;

    println!("{}", num.get()?);
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
