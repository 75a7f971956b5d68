//! Statistics (medians of runs, spread, paired ratios), the tables, the JSON, the
//! SVG plot and the targets.

use super::goals::{Figure, GOALS, Over, Pick};
use super::harness::Sample;
use super::system::Kind;
use super::{Measured, Plan, Workload, WorkloadResult};
use comfy_table::{CellAlignment, Table, presets};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

/// The machine the numbers came from.
pub struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    /// CPU hogs running beside the measurement (`--hog`), 0 if none.
    pub hogs: usize,
}

impl Machine {
    pub fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map_or_else(|| "unknown CPU".into(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            hogs: 0,
        }
    }
}

/// The figures of one run of one system.
#[derive(Clone, Copy)]
enum Figures {
    Rate { msgs_per_s: f64, gb_per_s: f64 },
    Latency { p50: f64, p99: f64, p999: f64 },
}

impl Figures {
    fn of(s: &Sample) -> Figures {
        match s {
            Sample::Rate {
                msgs,
                msg_bytes,
                secs,
            } => Figures::Rate {
                msgs_per_s: *msgs as f64 / secs,
                gb_per_s: (*msgs * *msg_bytes) as f64 / secs / 1e9,
            },
            Sample::Latency(h) => Figures::Latency {
                p50: h.value_at_quantile(0.50) as f64,
                p99: h.value_at_quantile(0.99) as f64,
                p999: h.value_at_quantile(0.999) as f64,
            },
        }
    }

    /// The figure ratios and bars are about: msgs/s, or p50.
    fn primary(self) -> f64 {
        match self {
            Figures::Rate { msgs_per_s, .. } => msgs_per_s,
            Figures::Latency { p50, .. } => p50,
        }
    }

    fn p99(self) -> f64 {
        match self {
            Figures::Rate { msgs_per_s, .. } => msgs_per_s,
            Figures::Latency { p99, .. } => p99,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One system's statistics over its runs.
struct Row {
    name: String,
    config: String,
    kind: Kind,
    reference: bool,
    count: u64,
    runs: Vec<Figures>,
    /// Median of each figure over the runs.
    median: Figures,
    /// (max − min) / median of the primary figure, in percent.
    spread_pct: f64,
    /// Median over runs of (this run's primary figure / the reference's in the same run).
    ratio: f64,
    /// The same for p99 (latency workloads).
    ratio_p99: f64,
}

struct Section {
    workload: Workload,
    rows: Vec<Row>,
}

/// Median over runs of a[r] / b[r] of `f`.
fn paired(a: &[Figures], b: &[Figures], f: fn(Figures) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| f(*x) / f(*y)).collect())
}

/// The worst of the runs' ratios a ÷ b: the highest for a latency, the lowest for a
/// rate.
fn worst_paired(a: &[Figures], b: &[Figures], f: fn(Figures) -> f64, latency: bool) -> f64 {
    let ratios = a.iter().zip(b).map(|(x, y)| f(*x) / f(*y));
    if latency {
        ratios.fold(f64::NEG_INFINITY, f64::max)
    } else {
        ratios.fold(f64::INFINITY, f64::min)
    }
}

impl Section {
    fn new(r: WorkloadResult) -> Section {
        let figs: Vec<Vec<Figures>> = r
            .systems
            .iter()
            .map(|m| m.runs.iter().map(Figures::of).collect())
            .collect();
        let reference = r
            .systems
            .iter()
            .position(|m| m.system.reference)
            .unwrap_or(0);
        let rows = r
            .systems
            .into_iter()
            .zip(&figs)
            .map(|(Measured { system, count, .. }, runs)| {
                let pick = |f: fn(Figures) -> f64| median(runs.iter().map(|x| f(*x)).collect());
                let median_figs = match runs.first() {
                    Some(Figures::Rate { .. }) => Figures::Rate {
                        msgs_per_s: pick(|f| match f {
                            Figures::Rate { msgs_per_s, .. } => msgs_per_s,
                            _ => f64::NAN,
                        }),
                        gb_per_s: pick(|f| match f {
                            Figures::Rate { gb_per_s, .. } => gb_per_s,
                            _ => f64::NAN,
                        }),
                    },
                    _ => Figures::Latency {
                        p50: pick(|f| match f {
                            Figures::Latency { p50, .. } => p50,
                            _ => f64::NAN,
                        }),
                        p99: pick(|f| match f {
                            Figures::Latency { p99, .. } => p99,
                            _ => f64::NAN,
                        }),
                        p999: pick(|f| match f {
                            Figures::Latency { p999, .. } => p999,
                            _ => f64::NAN,
                        }),
                    },
                };
                let prim: Vec<f64> = runs.iter().map(|f| f.primary()).collect();
                let (lo, hi) = prim
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
                        (l.min(*x), h.max(*x))
                    });
                Row {
                    name: system.name,
                    config: system.config,
                    kind: system.kind,
                    reference: system.reference,
                    count,
                    spread_pct: (hi - lo) / median_figs.primary() * 100.0,
                    median: median_figs,
                    ratio: paired(runs, &figs[reference], Figures::primary),
                    ratio_p99: paired(runs, &figs[reference], Figures::p99),
                    runs: runs.clone(),
                }
            })
            .collect();
        Section {
            workload: r.workload,
            rows,
        }
    }

    fn find(&self, pred: impl Fn(&Row) -> bool) -> Option<&Row> {
        self.rows.iter().find(|r| pred(r))
    }
}

/// Everything one `shmproc bench` produced.
pub struct Report {
    mode: &'static str,
    runs: usize,
    machine: Machine,
    python: bool,
    elapsed: Duration,
    sections: Vec<Section>,
}

fn rate(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn ns(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} ms", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1} µs", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.2} µs", x / 1e3)
    } else {
        format!("{x:.0} ns")
    }
}

fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}×")
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.2}×")
    }
}

impl Report {
    pub fn new(
        plan: &Plan,
        machine: Machine,
        python: bool,
        results: Vec<WorkloadResult>,
        elapsed: Duration,
    ) -> Report {
        Report {
            mode: plan.mode,
            runs: plan.runs,
            machine,
            python,
            elapsed,
            sections: results.into_iter().map(Section::new).collect(),
        }
    }

    /// (target, shmproc ÷ other, met) for the targets whose workload ran; the ratio
    /// is None when the other system was not measured.
    fn target_results(&self) -> Vec<(&'static str, f64, Option<f64>, Option<bool>)> {
        let mut out = Vec::new();
        for t in GOALS {
            let Some(sec) = self.sections.iter().find(|s| s.workload == t.workload) else {
                continue;
            };
            let pick = |p: &Pick| sec.find(|r| p.matches(&r.name, &r.config, r.kind, r.reference));
            let (Some(me), other) = (pick(&t.mine), pick(&t.other)) else {
                continue;
            };
            let Some(other) = other else {
                out.push((t.what, t.goal, None, None));
                continue;
            };
            let f = match t.figure {
                Figure::P99 => Figures::p99,
                Figure::Primary => Figures::primary,
            };
            let latency = t.workload.is_latency();
            let r = match t.over {
                Over::Median => paired(&me.runs, &other.runs, f),
                Over::EveryRun => worst_paired(&me.runs, &other.runs, f, latency),
            };
            let met = if latency { r <= t.goal } else { r >= t.goal };
            out.push((t.what, t.goal, Some(r), Some(met)));
        }
        out
    }

    fn header(&self) -> String {
        format!(
            "machine: {} ({} cores), Linux {}{}\nmode: {}, {} runs per system, medians of runs; ratios are paired run by run ({:.1} s in all){}\n",
            self.machine.cpu,
            self.machine.cores,
            self.machine.kernel,
            match self.machine.hogs {
                0 => String::new(),
                n => format!(", {n} CPU hog(s) running beside (--hog)"),
            },
            self.mode,
            self.runs,
            self.elapsed.as_secs_f64(),
            if self.python {
                ""
            } else {
                "; python3 not used"
            }
        )
    }

    /// The human-readable tables.
    pub fn tables(&self) -> String {
        let mut out = self.header();
        for s in &self.sections {
            let w = s.workload;
            let _ = writeln!(out, "\n{}", w.title());
            let mut t = Table::new();
            t.load_preset(presets::ASCII_MARKDOWN);
            let numeric: Vec<usize>;
            if w.is_latency() {
                t.set_header(vec![
                    "system",
                    "kind",
                    "config",
                    "p50",
                    "p99",
                    "p99.9",
                    "spread",
                    "p50 ÷ ref",
                    "p99 ÷ ref",
                ]);
                numeric = (3..9).collect();
                for r in &s.rows {
                    let Figures::Latency { p50, p99, p999 } = r.median else {
                        continue;
                    };
                    t.add_row(vec![
                        name_cell(r),
                        r.kind.label().to_string(),
                        r.config.clone(),
                        ns(p50),
                        ns(p99),
                        ns(p999),
                        format!("{:.0}%", r.spread_pct),
                        ratio(r.ratio),
                        ratio(r.ratio_p99),
                    ]);
                }
            } else {
                t.set_header(vec![
                    "system", "kind", "config", "msgs/s", "GB/s", "spread", "÷ ref",
                ]);
                numeric = (3..7).collect();
                for r in &s.rows {
                    let Figures::Rate {
                        msgs_per_s,
                        gb_per_s,
                    } = r.median
                    else {
                        continue;
                    };
                    t.add_row(vec![
                        name_cell(r),
                        r.kind.label().to_string(),
                        r.config.clone(),
                        rate(msgs_per_s),
                        format!("{gb_per_s:.2}"),
                        format!("{:.0}%", r.spread_pct),
                        ratio(r.ratio),
                    ]);
                }
            }
            for i in numeric {
                if let Some(c) = t.column_mut(i) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
            let _ = writeln!(out, "{t}");
        }
        let _ = writeln!(
            out,
            "\nref = the shmproc row marked *; ÷ ref: this system's median / ref's, paired run by run\n(throughput: above 1× is faster than ref; latency: above 1× is slower). spread: (max − min) / median over runs."
        );
        let targets = self.target_results();
        if !targets.is_empty() {
            let mut t = Table::new();
            t.load_preset(presets::ASCII_MARKDOWN);
            t.set_header(vec!["target (shmproc ÷ other)", "goal", "measured", "met"]);
            for (what, goal, r, met) in targets {
                t.add_row(vec![
                    what.to_string(),
                    format!("{goal}×"),
                    r.map_or("not measured".into(), ratio),
                    met.map_or("-", |m| if m { "yes" } else { "no" })
                        .to_string(),
                ]);
            }
            let _ = writeln!(
                out,
                "\nThe targets (issue 16's, and the earlier ones it kept)\n{t}"
            );
        }
        out
    }

    /// The machine-readable report.
    pub fn json(&self) -> Value {
        let workloads: Vec<Value> = self
            .sections
            .iter()
            .map(|s| {
                let systems: Vec<Value> = s
                    .rows
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "config": r.config,
                            "kind": r.kind.label(),
                            "reference": r.reference,
                            "count_per_run": r.count,
                            "median": figures_json(r.median),
                            "runs": r.runs.iter().map(|f| figures_json(*f)).collect::<Vec<_>>(),
                            "spread_pct": finite(r.spread_pct),
                            "ratio_to_reference": finite(r.ratio),
                            "p99_ratio_to_reference": if s.workload.is_latency() { finite(r.ratio_p99) } else { Value::Null },
                        })
                    })
                    .collect();
                json!({
                    "workload": s.workload.name(),
                    "title": s.workload.title(),
                    "unit": if s.workload.is_latency() { "ns" } else { "msgs/s" },
                    "systems": systems,
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .target_results()
            .into_iter()
            .map(|(what, goal, r, met)| {
                json!({"target": what, "goal": goal, "measured": r.map(finite), "met": met})
            })
            .collect();
        json!({
            "machine": {
                "cpu": self.machine.cpu,
                "cores": self.machine.cores,
                "kernel": self.machine.kernel,
                "hogs": self.machine.hogs,
            },
            "mode": self.mode,
            "runs": self.runs,
            "python": self.python,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "workloads": workloads,
            "targets": targets,
        })
    }

    /// Bars per system, one panel per workload, on a log scale: throughput (msgs/s,
    /// GB/s for T1M) or latency (p50 bar, p99 tick).
    pub fn svg(&self) -> String {
        const W: f64 = 960.0;
        const LABEL: f64 = 400.0;
        const BAR: f64 = 430.0;
        const ROW: f64 = 18.0;
        let mut body = String::new();
        let mut y = 30.0;
        let _ = writeln!(
            body,
            r#"<text x="10" y="18" font-size="13" font-weight="bold">shmproc bench — {} ({} cores), Linux {} — {} mode, medians of {} runs, log scale</text>"#,
            esc(&self.machine.cpu),
            self.machine.cores,
            esc(&self.machine.kernel),
            self.mode,
            self.runs
        );
        for s in &self.sections {
            let lat = s.workload.is_latency();
            let value = |r: &Row| match r.median {
                Figures::Rate { gb_per_s, .. } if s.workload == Workload::T1M => gb_per_s,
                f => f.primary(),
            };
            let hi = s
                .rows
                .iter()
                .map(|r| if lat { r.median.p99() } else { value(r) })
                .fold(f64::MIN_POSITIVE, f64::max);
            let lo = s
                .rows
                .iter()
                .map(value)
                .filter(|v| *v > 0.0)
                .fold(hi, f64::min)
                / 2.0;
            let scale = |v: f64| {
                if v <= lo {
                    0.0
                } else {
                    BAR * (v / lo).ln() / (hi / lo).ln().max(1e-9)
                }
            };
            let unit = match s.workload {
                Workload::T1M => "GB/s (longer is better)",
                _ if lat => "p50 bar, p99 tick (shorter is better)",
                _ => "msgs/s (longer is better)",
            };
            y += 22.0;
            let _ = writeln!(
                body,
                r#"<text x="10" y="{y}" font-size="12" font-weight="bold">{} — {}</text>"#,
                esc(s.workload.title()),
                unit
            );
            y += 6.0;
            for r in &s.rows {
                let v = value(r);
                let color = match r.kind {
                    Kind::Shmproc => "#2b6cb0",
                    Kind::Floor | Kind::Ceiling => "#718096",
                    Kind::Os => "#dd6b20",
                    Kind::Library => "#38a169",
                    Kind::Python => "#d69e2e",
                    #[cfg(feature = "peers")]
                    Kind::Peer => "#805ad5",
                };
                let len = scale(v);
                let _ = writeln!(
                    body,
                    r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{}{} ({})</text><rect x="{LABEL}" y="{}" width="{len:.1}" height="{}" fill="{color}"/>"#,
                    LABEL - 6.0,
                    y + 12.0,
                    if r.reference { "* " } else { "" },
                    esc(&r.name),
                    esc(&r.config),
                    y + 3.0,
                    ROW - 5.0
                );
                let label = if lat {
                    let p99 = r.median.p99();
                    let x = LABEL + scale(p99);
                    let _ = writeln!(
                        body,
                        r#"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="black" stroke-width="2"/>"#,
                        y + 1.0,
                        y + ROW - 1.0
                    );
                    format!("{} / {}", ns(v), ns(p99))
                } else if s.workload == Workload::T1M {
                    format!("{v:.2} GB/s")
                } else {
                    rate(v)
                };
                let tx = LABEL + if lat { scale(r.median.p99()) } else { len } + 6.0;
                let _ = writeln!(
                    body,
                    r#"<text x="{tx:.1}" y="{}" font-size="10">{} ({})</text>"#,
                    y + 12.0,
                    esc(&label),
                    ratio(r.ratio)
                );
                y += ROW;
            }
        }
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#,
            y + 20.0
        )
    }
}

fn name_cell(r: &Row) -> String {
    if r.reference {
        format!("* {}", r.name)
    } else {
        r.name.clone()
    }
}

fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn figures_json(f: Figures) -> Value {
    match f {
        Figures::Rate {
            msgs_per_s,
            gb_per_s,
        } => {
            json!({"msgs_per_s": finite(msgs_per_s), "gb_per_s": finite(gb_per_s)})
        }
        Figures::Latency { p50, p99, p999 } => {
            json!({"p50_ns": finite(p50), "p99_ns": finite(p99), "p999_ns": finite(p999)})
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
