//! Segment names: the rules, their check, and how messages show a name.

use std::fmt;

/// Longest segment name accepted, in bytes (Linux allows 255 for a file name; the rest
/// is left for tools that add suffixes).
pub const NAME_MAX: usize = 200;

/// A segment name that breaks the naming rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty (or only `/`).
    Empty,
    /// Longer than [`NAME_MAX`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `A-Z a-z 0-9 . _ -`.
    BadChar {
        /// The character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// Starts with `.` (hidden files, `.` and `..` are not segment names).
    LeadingDot,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("invalid segment name: empty"),
            NameError::TooLong { len } => write!(
                f,
                "invalid segment name: {len} bytes long, at most {NAME_MAX} allowed"
            ),
            NameError::BadChar { ch, at } => write!(
                f,
                "invalid segment name: character {ch:?} at byte {at} (allowed: A-Z a-z 0-9 . _ -)"
            ),
            NameError::LeadingDot => f.write_str("invalid segment name: starts with '.'"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a segment name and returns it without its optional leading `/` (POSIX
/// `shm_open` style names like `/jobs` and plain `jobs` mean the same segment).
///
/// # Errors
///
/// [`NameError`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<&str, NameError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    if bare.len() > NAME_MAX {
        return Err(NameError::TooLong { len: bare.len() });
    }
    if let Some((at, ch)) = bare
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar { ch, at });
    }
    if bare.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    Ok(bare)
}

/// Shows a segment's name in messages (`'jobs'`, or `<anonymous>`).
pub(super) struct Shown<'a>(pub(super) &'a Option<String>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "segment '{n}'"),
            None => f.write_str("anonymous segment"),
        }
    }
}
