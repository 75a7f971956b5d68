//! The start request: what a parent sends a spawned or forkserver child, and how the
//! child runs it.
//!
//! A request is a header of eight little-endian `u64`s, then the encoded arguments:
//!
//! | word | field |
//! |---|---|
//! | 0 | magic, `b"shmpstrt"` |
//! | 1 | version, 1 |
//! | 2, 3 | device and inode of the executable |
//! | 4 | the entry's offset from [`anchor`] (two's complement) |
//! | 5 | the user function's offset from [`anchor`] |
//! | 6 | bytes of encoded arguments that follow |
//! | 7 | descriptors attached |
//!
//! # Why a child may call through the offsets
//!
//! The child re-executes the very file of the parent (`/proc/self/exe`, an open
//! inode even if the path was replaced since), and checks the device and inode
//! again. One executable image has one layout, so an offset between two of its
//! functions is the same in every process that runs it, whatever address the loader
//! chose; the parent sends offsets only for functions it checked are in the
//! executable's own code (not a shared library's). The request comes over a socket
//! only the parent's processes hold (a socketpair: no name, no address), so no other
//! process can send one.

use super::StartError;
use super::portable::{Decoder, Encoder, Portable};
use crate::os::socket::Message;
use crate::process::ChildResult;
use rustix::fd::OwnedFd;
use std::sync::OnceLock;

/// The environment variable that tells [`init`](super::init) what this process is.
pub(crate) const ENV: &str = "SHMPROC_START";
/// Most bytes of one request (header and arguments).
pub(crate) const MAX_REQUEST: usize = 60 * 1024;
/// Bytes of the header.
const HEADER: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"shmpstrt");
const VERSION: u64 = 1;

/// What a child runs: decodes the arguments from `dec`, reports through `ready`
/// whether they decoded (and so whether the parent may let go of its handles), then
/// calls the function and returns the exit code.
///
/// # Safety
///
/// `func` must be the address of an `fn(A) -> R` of this program for the `A` and
/// `R` the entry was instantiated for.
type Entry =
    unsafe fn(func: usize, dec: &mut Decoder<'_>, ready: &mut dyn FnMut(Result<(), String>)) -> i32;

/// The [`Entry`] for `fn(A) -> R`.
///
/// # Safety
///
/// As for [`Entry`].
unsafe fn entry<A: Portable, R: ChildResult>(
    func: usize,
    dec: &mut Decoder<'_>,
    ready: &mut dyn FnMut(Result<(), String>),
) -> i32 {
    let args = match A::decode(dec).and_then(|a| dec.finish().map(|()| a)) {
        Ok(args) => args,
        Err(e) => {
            ready(Err(e.to_string()));
            return REFUSED_CODE;
        }
    };
    ready(Ok(()));
    // SAFETY: the caller guarantees `func` is the address of an `fn(A) -> R` of this
    // program; fn pointers and usize have the same size on every Linux target.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(args).exit_code())).unwrap_or(1)
}

/// The exit code of a child that refused its request.
pub(crate) const REFUSED_CODE: i32 = 2;

/// The point every offset is measured from: a function of this crate, in the
/// executable's code like the user's functions.
#[inline(never)]
fn anchor() {
    std::hint::black_box(());
}

/// `addr`'s offset from the anchor: the same in every process that runs this
/// executable, wherever the loader put it.
pub(crate) fn code_offset(addr: usize) -> u64 {
    addr.wrapping_sub(anchor as fn() as usize) as u64
}

/// The address `offset` (from [`code_offset`]) names in this process.
pub(crate) fn code_address(offset: u64) -> usize {
    (anchor as fn() as usize).wrapping_add(offset as usize)
}

/// Whether `addr` lies in the executable's own code (not a shared library's).
pub(crate) fn in_executable(addr: usize) -> bool {
    executable().is_ok_and(|e| e.holds(addr))
}

/// A request ready to send.
pub(crate) struct Request {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// The request to run `f(args)`.
pub(crate) fn build<A: Portable, R: ChildResult>(
    f: fn(A) -> R,
    args: &A,
) -> Result<Request, StartError> {
    let exe = executable()?;
    let entry_addr = entry::<A, R> as Entry as usize;
    let func = f as usize;
    for (what, addr) in [
        ("the child function", func),
        ("shmproc's entry", entry_addr),
    ] {
        if !exe.holds(addr) {
            return Err(StartError::NotInExecutable { what, addr });
        }
    }
    let mut enc = Encoder::default();
    args.encode(&mut enc).map_err(StartError::Handoff)?;
    let (arg_bytes, fds) = enc.into_parts();
    if HEADER + arg_bytes.len() > MAX_REQUEST {
        return Err(StartError::ArgsTooLarge {
            bytes: arg_bytes.len(),
            max: MAX_REQUEST - HEADER,
        });
    }
    let words = [
        MAGIC,
        VERSION,
        exe.dev,
        exe.ino,
        code_offset(entry_addr),
        code_offset(func),
        arg_bytes.len() as u64,
        fds.len() as u64,
    ];
    let mut bytes = Vec::with_capacity(HEADER + arg_bytes.len());
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes.extend_from_slice(&arg_bytes);
    Ok(Request { bytes, fds })
}

/// Runs a received request in the child: checks its header, decodes the arguments
/// and calls the function. `ready` hears whether the arguments decoded. Returns the
/// exit code.
pub(crate) fn run(msg: Message, ready: &mut dyn FnMut(Result<(), String>)) -> i32 {
    let Message { bytes, fds } = msg;
    let (entry_addr, func) = match check(&bytes, fds.len()) {
        Ok(addrs) => addrs,
        Err(why) => {
            ready(Err(why));
            return REFUSED_CODE;
        }
    };
    let mut dec = Decoder::new(&bytes[HEADER..], fds);
    // SAFETY: `check` verified that the request was made for this very executable
    // (device and inode) and that both addresses lie in its code. The parent — the
    // only process holding the request socket's other end — computed the offsets
    // from `entry::<A, R>` and an `fn(A) -> R` of the same image, so `anchor` plus
    // each offset is that entry and that function here.
    let entry = unsafe { std::mem::transmute::<usize, Entry>(entry_addr) };
    // SAFETY: as above, `func` is the `fn(A) -> R` the entry was instantiated for.
    unsafe { entry(func, &mut dec, ready) }
}

/// The entry and function addresses of a request, after checking its header.
fn check(bytes: &[u8], fd_count: usize) -> Result<(usize, usize), String> {
    if bytes.len() < HEADER {
        return Err(format!("a start request of {} bytes", bytes.len()));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    if word(0) != MAGIC || word(1) != VERSION {
        return Err("not a shmproc start request of this version".into());
    }
    let exe = executable().map_err(|e| e.to_string())?;
    if (word(2), word(3)) != (exe.dev, exe.ino) {
        return Err("the request was made for another executable".into());
    }
    if word(6) != (bytes.len() - HEADER) as u64 || word(7) != fd_count as u64 {
        return Err(format!(
            "the request says {} argument bytes and {} descriptors, {} and {fd_count} came",
            word(6),
            word(7),
            bytes.len() - HEADER
        ));
    }
    let entry = code_address(word(4));
    let func = code_address(word(5));
    if !exe.holds(entry) || !exe.holds(func) {
        return Err("a function offset outside the executable's code".into());
    }
    Ok((entry, func))
}

/// The running executable: its file's identity and where its code is mapped.
struct Executable {
    dev: u64,
    ino: u64,
    /// Address ranges mapped executable from the file.
    code: Vec<(usize, usize)>,
}

impl Executable {
    fn holds(&self, addr: usize) -> bool {
        self.code.iter().any(|&(lo, hi)| (lo..hi).contains(&addr))
    }
}

/// The executable, read once from `/proc/self/exe` and `/proc/self/maps`.
fn executable() -> Result<&'static Executable, StartError> {
    static EXE: OnceLock<Result<Executable, String>> = OnceLock::new();
    EXE.get_or_init(read_executable)
        .as_ref()
        .map_err(|e| StartError::Io(std::io::Error::other(e.clone())))
}

fn read_executable() -> Result<Executable, String> {
    let st = rustix::fs::stat("/proc/self/exe").map_err(|e| format!("stat /proc/self/exe: {e}"))?;
    let (dev, ino) = (st.st_dev as u64, st.st_ino as u64);
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mut code = Vec::new();
    for line in maps.lines() {
        // "lo-hi perms offset dev inode path"
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(_), Some(_), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !perms.contains('x') || inode.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
            code.push((lo, hi));
        }
    }
    if code.is_empty() {
        return Err("found no code mapped from the executable in /proc/self/maps".into());
    }
    Ok(Executable { dev, ino, code })
}
