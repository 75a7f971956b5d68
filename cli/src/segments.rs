//! `ls`, `inspect` and `rm`.

use crate::{Found, examine};
use shmproc::layout::header::{HeaderError, InitState};
use shmproc::segment::{OpenBy, OpenOptions, Segment, validate_name};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How old an empty (header-less) file must be before `rm --stale` takes it: a
/// creator writes its header microseconds after `shm_open`, and holds the descriptor
/// meanwhile, so this only guards against a scan that raced the creation.
pub const EMPTY_GRACE: Duration = Duration::from_secs(5);

/// What one scan of `/proc` says about who holds the files in a directory. Without
/// `/proc` nothing is known, and nothing empty counts as abandoned.
struct Holding(Option<OpenBy>);

impl Holding {
    fn scan() -> Holding {
        Holding(OpenBy::scan().ok())
    }

    /// Processes holding `name`; `None` if that cannot be known.
    fn pids(&self, name: &str) -> Option<Vec<u32>> {
        self.0.as_ref().map(|s| s.pids(name))
    }

    /// Whether no process holds `path` (named `name`) and none that could be its
    /// creator (the file's owner) was hidden from the scan.
    fn nobody_holds(&self, name: &str, path: &Path) -> bool {
        let (Some(scan), Ok(meta)) = (&self.0, std::fs::metadata(path)) else {
            return false;
        };
        scan.pids(name).is_empty() && scan.hidden_owned_by(meta.uid()) == 0
    }
}

/// How long ago `path` was last modified (zero if unknown or in the future).
fn age(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
}

/// The STATUS of an empty file.
fn empty_status(holders: &Option<Vec<u32>>) -> String {
    match holders.as_deref() {
        Some([]) => "empty, no header; held by nobody (creator died before writing it)".into(),
        Some(_) => "empty, no header yet (being created?)".into(),
        None => "empty, no header".into(),
    }
}

fn held_by(holders: &Option<Vec<u32>>) -> String {
    match holders {
        Some(p) => format!("{} holding", p.len()),
        None => "?".into(),
    }
}

/// Where named segments live.
pub const SHM_DIR: &str = "/dev/shm";

fn alive_word(alive: bool) -> &'static str {
    if alive { "alive" } else { "dead" }
}

fn live_count(attached: &[(u32, bool)]) -> usize {
    attached.iter().filter(|(_, a)| *a).count()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Names of the regular files in `dir`, sorted.
fn entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Prints rows with columns padded to the widest cell.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub fn ls(dir: &Path, ours_only: bool) -> io::Result<ExitCode> {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "KIND".into(),
        "ELEMENT".into(),
        "SIZE".into(),
        "CREATOR".into(),
        "OPEN BY".into(),
        "STATUS".into(),
    ]];
    let mut foreign = 0;
    let holding = Holding::scan();
    for name in entries(dir)? {
        let path = dir.join(&name);
        let row = match examine(&path) {
            Ok((len, Found::Empty)) => {
                let holders = holding.pids(&name);
                vec![
                    name,
                    "?".into(),
                    "-".into(),
                    human(len),
                    "unknown".into(),
                    held_by(&holders),
                    empty_status(&holders),
                ]
            }
            Ok((len, Found::Segment(info, attached))) => vec![
                name,
                info.layout.kind.to_string(),
                info.layout.elem.name.to_string(),
                human(len),
                format!(
                    "{} ({})",
                    info.creator_pid,
                    alive_word(info.creator_alive())
                ),
                format!("{} live", live_count(&attached)),
                "ready".into(),
            ],
            Ok((len, Found::Broken(e, attached))) => {
                let creator = match &e {
                    HeaderError::NotReady {
                        creator_pid,
                        creator_start_ticks,
                        ..
                    } if *creator_pid != 0 => {
                        let alive = shmproc_is_alive(*creator_pid, *creator_start_ticks);
                        format!("{creator_pid} ({})", alive_word(alive))
                    }
                    _ => "-".into(),
                };
                vec![
                    name,
                    "?".into(),
                    "-".into(),
                    human(len),
                    creator,
                    format!("{} live", live_count(&attached)),
                    e.to_string(),
                ]
            }
            Ok((len, Found::Foreign(why))) => {
                foreign += 1;
                if ours_only {
                    continue;
                }
                vec![
                    name,
                    "-".into(),
                    "-".into(),
                    human(len),
                    "-".into(),
                    "-".into(),
                    why,
                ]
            }
            Err(e) => {
                foreign += 1;
                if ours_only {
                    continue;
                }
                vec![
                    name,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("unreadable: {e}"),
                ]
            }
        };
        rows.push(row);
    }
    if rows.len() == 1 && foreign == 0 {
        println!("no segments in {}", dir.display());
    } else {
        print_table(&rows);
        if ours_only && foreign > 0 {
            println!(
                "({foreign} other files in {} are not shmproc segments)",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Liveness as the library judges it (pid plus start time; zombies count as dead).
fn shmproc_is_alive(pid: u32, start_ticks: u64) -> bool {
    shmproc::process::is_alive(pid, start_ticks)
}

pub fn inspect(name: &str) -> io::Result<ExitCode> {
    let bare = validate_name(name).map_err(io::Error::other)?;
    let path = Path::new(SHM_DIR).join(bare);
    let (len, found) =
        examine(&path).map_err(|e| io::Error::new(e.kind(), format!("{bare}: {e}")))?;
    let (info, attached) = match found {
        Found::Segment(info, attached) => (info, attached),
        Found::Broken(e, _) => {
            println!("{bare}: shmproc segment, unusable: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Found::Empty => {
            let holders = Holding::scan().pids(bare);
            println!(
                "{bare}: {len} bytes, {}; modified {}s ago; held by {}",
                empty_status(&holders),
                age(&path).as_secs(),
                match holders {
                    Some(p) if !p.is_empty() => format!("{p:?}"),
                    Some(_) => "nobody".into(),
                    None => "unknown".into(),
                }
            );
            return Ok(ExitCode::FAILURE);
        }
        Found::Foreign(why) => {
            println!("{bare}: {why}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let l = &info.layout;
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_millis(info.created_unix_ms);
    let age = std::time::SystemTime::now()
        .duration_since(created)
        .unwrap_or_default();
    println!("name            {bare}");
    println!("kind            {}", l.kind);
    println!("element         {}", l.elem);
    println!("layout version  {}", info.version);
    println!("file size       {} ({len} bytes)", human(len));
    println!(
        "payload         {} bytes at offset {}",
        l.payload_size, info.payload_offset
    );
    if l.slot_size != 0 {
        println!("slot size       {} bytes", l.slot_size);
    }
    if l.capacity != 0 {
        println!("capacity        {}", l.capacity);
    }
    println!(
        "creator         pid {} ({}), created {}s ago",
        info.creator_pid,
        alive_word(info.creator_alive()),
        age.as_secs()
    );
    if attached.is_empty() {
        println!("open by         nobody recorded");
    } else {
        let list: Vec<String> = attached
            .iter()
            .map(|(pid, alive)| format!("{pid} ({})", alive_word(*alive)))
            .collect();
        println!("open by         {}", list.join(", "));
    }
    // Object state, read through a read-only mapping validated like any open.
    match Segment::open_any(bare, OpenOptions::new().read_only(true)) {
        Ok(seg) => {
            for (key, value) in shmproc::object::inspect::object_state(&seg) {
                println!("{key:<16}{value}");
            }
        }
        Err(e) => println!("state           unavailable: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `name` may be removed by `rm --stale`: a segment whose creator is dead
/// and that no live process is recorded as having open nor holds (descriptor or
/// mapping); or an empty, header-less file nobody holds, older than [`EMPTY_GRACE`].
fn is_stale(found: &Found, name: &str, path: &Path, holding: &Holding) -> bool {
    let unheld = || holding.pids(name).is_none_or(|p| p.is_empty());
    match found {
        Found::Segment(info, attached) => {
            !info.creator_alive() && live_count(attached) == 0 && unheld()
        }
        Found::Broken(e, attached) => {
            let creator_dead = match e {
                HeaderError::NotReady {
                    state: InitState::Failed,
                    ..
                } => true,
                HeaderError::NotReady {
                    creator_pid,
                    creator_start_ticks,
                    ..
                } => *creator_pid != 0 && !shmproc_is_alive(*creator_pid, *creator_start_ticks),
                // Corrupt or another version: nobody can tell; leave it to `rm NAME`.
                _ => false,
            };
            creator_dead && live_count(attached) == 0 && unheld()
        }
        Found::Empty => holding.nobody_holds(name, path) && age(path) >= EMPTY_GRACE,
        Found::Foreign(_) => false,
    }
}

pub fn rm(dir: &Path, names: &[String], stale: bool, dry_run: bool) -> io::Result<ExitCode> {
    if names.is_empty() && !stale {
        return Err(io::Error::other("rm needs segment names or --stale"));
    }
    let mut failed = false;
    let mut targets: Vec<String> = Vec::new();
    for name in names {
        let bare = match validate_name(name) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("shmproc: {name}: {e}");
                failed = true;
                continue;
            }
        };
        match examine(&dir.join(bare)) {
            Ok((_, Found::Foreign(why))) => {
                eprintln!("shmproc: {bare}: {why}; not removed");
                failed = true;
            }
            Ok(_) => targets.push(bare.to_string()),
            Err(e) => {
                eprintln!("shmproc: {bare}: {e}");
                failed = true;
            }
        }
    }
    if stale {
        let holding = Holding::scan();
        for name in entries(dir)? {
            let path = dir.join(&name);
            if let Ok((_, found)) = examine(&path) {
                if is_stale(&found, &name, &path, &holding) && !targets.contains(&name) {
                    targets.push(name);
                }
            }
        }
    }
    for name in &targets {
        if dry_run {
            println!("would remove {name}");
            continue;
        }
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => println!("removed {name}"),
            Err(e) => {
                eprintln!("shmproc: {name}: {e}");
                failed = true;
            }
        }
    }
    if stale && targets.is_empty() {
        println!("no stale segments");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
