//! `shmproc start-bench`: process start-to-first-message latency for the three start
//! methods, shmproc's beside Python's, in one run.
//!
//! Each run starts a child that sends one message on a pipe, and times the parent
//! from the call that starts it to the message's arrival; the child is joined
//! outside the timed part. The forkserver is started before the timed runs (for
//! shmproc by `start_forkserver`, for Python by `forkserver.ensure_running`). Methods
//! are interleaved run by run, so a drift of the machine touches all of them alike.

use shmproc::start::StartMethod;
use shmproc::{Connection, Process};
use std::time::Instant;

const PY: &str = include_str!("start_bench.py");

/// The child of every shmproc run: one message, then exit.
fn child(conn: Connection) {
    let _ = conn.send(&1u64);
}

/// One shmproc run: nanoseconds from start to the first message.
fn shmproc_run(method: StartMethod) -> Result<u64, String> {
    let (ours, theirs) = shmproc::pipe(false).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut p = Process::start(method, child, theirs).map_err(|e| e.to_string())?;
    ours.recv::<u64>().map_err(|e| e.to_string())?;
    let ns = t0.elapsed().as_nanos() as u64;
    p.join().map_err(|e| e.to_string())?;
    Ok(ns)
}

/// Python's runs of `method`, or why there are none.
fn python_runs(method: &str, runs: usize) -> Result<Vec<u64>, String> {
    // A file, not `-c`: spawn and forkserver children import the main module by path.
    let path = std::env::temp_dir().join(format!("shmproc-start-bench-{}.py", std::process::id()));
    std::fs::write(&path, PY).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(method)
        .arg(runs.to_string())
        .output()
        .map_err(|e| format!("python3: {e}"));
    let _ = std::fs::remove_file(&path);
    let out = out?;
    if !out.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("python3 printed something else: {e}"))?;
    v["ns"]
        .as_array()
        .ok_or("no ns array")?
        .iter()
        .map(|x| x.as_u64().ok_or_else(|| "a non-integer time".to_string()))
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

/// Runs the comparison: `runs` starts per method and system.
pub fn run(runs: usize, python: bool) -> Result<(), String> {
    let runs = runs.max(1);
    shmproc::start::start_forkserver().map_err(|e| e.to_string())?;
    let methods = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ];
    let mut ours: Vec<Vec<u64>> = vec![Vec::new(); methods.len()];
    // A warm-up start of each (page cache, the forkserver's first fork).
    for m in methods {
        shmproc_run(m)?;
    }
    for _ in 0..runs {
        for (i, m) in methods.iter().enumerate() {
            ours[i].push(shmproc_run(*m)?);
        }
    }
    println!("start-to-first-message latency, {runs} runs each (p50 / p99 / min)");
    println!("{:<24} {:>12} {:>12} {:>12}", "system", "p50", "p99", "min");
    let mut p50s = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let mut v = ours[i].clone();
        v.sort_unstable();
        p50s.push(percentile(&v, 0.5));
        println!(
            "{:<24} {:>12} {:>12} {:>12}",
            format!("shmproc {m}"),
            us(percentile(&v, 0.5)),
            us(percentile(&v, 0.99)),
            us(v[0])
        );
    }
    if python {
        for (i, m) in methods.iter().enumerate() {
            match python_runs(&m.to_string(), runs) {
                Ok(mut v) if !v.is_empty() => {
                    v.sort_unstable();
                    let p50 = percentile(&v, 0.5);
                    println!(
                        "{:<24} {:>12} {:>12} {:>12}   shmproc is {:.1}× faster (p50)",
                        format!("python {m}"),
                        us(p50),
                        us(percentile(&v, 0.99)),
                        us(v[0]),
                        p50 as f64 / p50s[i].max(1) as f64
                    );
                }
                Ok(_) => println!("python {m}: no runs"),
                Err(e) => println!("python {m}: {e}"),
            }
        }
    }
    Ok(())
}
