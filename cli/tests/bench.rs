//! `shmproc bench` runs end to end: a tiny round-trip run whose JSON parses and names
//! its systems. No timing value is asserted (the numbers of a smoke run mean nothing).

use std::process::Command;

#[test]
fn bench_smoke_rtt_json_lists_systems() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmproc"))
        .args(["bench", "--smoke", "--only", "RTT", "--json", "--no-python"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    let workloads = v["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0]["workload"], "RTT");
    let systems = workloads[0]["systems"].as_array().unwrap();
    let names: Vec<&str> = systems
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for want in [
        "Pipe",
        "Queue<u64>",
        "one atomic bounced",
        "OS pipe",
        "crossbeam",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "no {want} in {names:?}"
        );
    }
    assert_eq!(
        systems.iter().filter(|s| s["reference"] == true).count(),
        1,
        "exactly one reference row"
    );
    for s in systems {
        assert!(s["median"]["p50_ns"].is_number(), "{s}");
    }
}

#[test]
fn bench_rejects_unknown_workload() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmproc"))
        .args(["bench", "--only", "NOPE"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn bench_smoke_dict_and_pool_json_lists_systems() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmproc"))
        .args([
            "bench",
            "--smoke",
            "--only",
            "DGET1K",
            "--only",
            "DMIX",
            "--only",
            "PMAP1",
            "--only",
            "PAPPLY",
            "--json",
            "--no-python",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let workloads = v["workloads"].as_array().unwrap();
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DGET1K", "DMIX", "PMAP1", "PAPPLY"]);
    for w in workloads {
        let systems = w["systems"].as_array().unwrap();
        let rows: Vec<&str> = systems
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let want: &[&str] = if w["workload"].as_str().unwrap().starts_with('D') {
            &["Dict<u64, u64>", "RwLock<HashMap", "DashMap"]
        } else {
            &["Pool", "rayon"]
        };
        for want in want {
            assert!(
                rows.iter().any(|n| n.starts_with(want)),
                "no {want} in {rows:?}"
            );
        }
        assert_eq!(
            systems.iter().filter(|s| s["reference"] == true).count(),
            1,
            "exactly one reference row in {rows:?}"
        );
        let figure = if w["unit"] == "ns" {
            "p50_ns"
        } else {
            "msgs_per_s"
        };
        for s in systems {
            assert!(s["median"][figure].as_f64().unwrap() > 0.0, "{s}");
        }
    }
}

#[test]
fn bench_suite_selects_its_workloads() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmproc"))
        .args([
            "bench",
            "--smoke",
            "--suite",
            "dict",
            "--json",
            "--no-python",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DGET1K", "DGET1M", "DINS", "DMIX"]);
}

#[test]
fn bench_hog_runs_beside_and_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmproc"))
        .args([
            "bench",
            "--smoke",
            "--only",
            "MPMC",
            "--json",
            "--no-python",
            "--hog",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    assert!(stderr.contains("1 CPU hog(s)"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["machine"]["hogs"], 1);
    assert_eq!(v["workloads"][0]["workload"], "MPMC");
}
