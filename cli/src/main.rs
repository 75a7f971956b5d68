//! `shmproc`: tools for shmproc's shared-memory segments.
//!
//! - `shmproc ls`: every file in /dev/shm, shmproc's with kind, size and creator;
//! - `shmproc inspect NAME`: one segment's header, attached processes and state;
//! - `shmproc rm NAME…` / `shmproc rm --stale`: remove segments (never foreign files);
//! - `shmproc bench`: shmproc's Queue and Pipe between processes beside the
//!   alternatives, as medians, spreads and ratios;
//! - `shmproc start-bench`: process start latency of fork, spawn and forkserver,
//!   beside Python's.

use clap::{Parser, Subcommand};
use shmproc::layout::header::{self, HEADER_SIZE, HeaderError, HeaderInfo};
use std::path::Path;
use std::process::ExitCode;

mod bench;
mod segments;
mod start_bench;

#[derive(Parser)]
#[command(
    name = "shmproc",
    version,
    about = "Tools for shmproc's shared-memory objects"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the files in /dev/shm: shmproc segments with kind, size and creator;
    /// other files marked as not shmproc's.
    Ls {
        /// Only shmproc segments.
        #[arg(long)]
        ours: bool,
    },
    /// Show one segment's header, attached processes and object state.
    Inspect {
        /// Segment name (with or without a leading '/').
        name: String,
    },
    /// Remove segments by name, or every stale one. Files that are not shmproc
    /// segments are never removed.
    Rm {
        /// Names of segments to remove.
        names: Vec<String>,
        /// Remove every segment whose creator is dead and that no process has open or
        /// mapped, and every empty (header-less) file nobody holds that is older
        /// than a few seconds.
        #[arg(long)]
        stale: bool,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measure Queue and Pipe between processes, beside a floor and ceilings in raw
    /// shared memory, the OS's pipes and sockets, crossbeam-channel and Python's
    /// multiprocessing, all in the same run (`--suite dict`, `--suite pool`: Dict and
    /// Pool against in-process maps and pools and Python's Manager().dict() and Pool).
    Bench(bench::BenchArgs),
    /// Measure process start-to-first-message latency for the fork, spawn and
    /// forkserver start methods, beside Python's three, interleaved.
    StartBench {
        /// Starts per method and system.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Leave Python out.
        #[arg(long)]
        no_python: bool,
    },
}

fn main() -> ExitCode {
    // Spawned and forkserver children (start-bench) re-execute this binary.
    shmproc::start::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ls { ours } => segments::ls(Path::new(segments::SHM_DIR), ours),
        Command::Inspect { name } => segments::inspect(&name),
        Command::Rm {
            names,
            stale,
            dry_run,
        } => segments::rm(Path::new(segments::SHM_DIR), &names, stale, dry_run),
        Command::Bench(args) => return bench::run(args),
        Command::StartBench { runs, no_python } => start_bench::run(runs, !no_python)
            .map(|()| ExitCode::SUCCESS)
            .map_err(std::io::Error::other),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmproc: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a file in /dev/shm turned out to be.
enum Found {
    /// A ready, valid segment.
    Segment(HeaderInfo, Vec<(u32, bool)>),
    /// Ours (shmproc magic) but not usable: initializing, failed, corrupt, other
    /// version.
    Broken(HeaderError, Vec<(u32, bool)>),
    /// No header at all: a 0-byte or all-zero file. A shmproc creator leaves one only
    /// if it dies between `shm_open` and writing the header; whose it is, nobody can
    /// tell.
    Empty,
    /// Not a shmproc segment.
    Foreign(String),
}

/// Reads the header of a file without mapping it (no SIGBUS, whatever the file).
fn examine(path: &Path) -> std::io::Result<(u64, Found)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut image = Vec::with_capacity(HEADER_SIZE);
    file.by_ref()
        .take(HEADER_SIZE as u64)
        .read_to_end(&mut image)?;
    if image.iter().all(|&b| b == 0) && (len == 0 || image.len() == HEADER_SIZE) {
        return Ok((len, Found::Empty));
    }
    let found = match header::parse(&image, len) {
        Ok(info) => Found::Segment(info, header::attached_in(&image)),
        Err(HeaderError::NotShmproc { .. }) => Found::Foreign("not a shmproc segment".into()),
        Err(HeaderError::TooShort { len }) if !image.starts_with(&header::MAGIC) => {
            Found::Foreign(format!("not a shmproc segment ({len} bytes)"))
        }
        Err(e) => Found::Broken(e, header::attached_in(&image)),
    };
    Ok((len, found))
}
