//! The layout layer: what a segment looks like in memory, pinned by compile-time
//! assertions so two builds of the crate agree byte for byte.

pub mod header;
pub mod padded;
