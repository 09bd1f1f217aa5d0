//! The synchronisation primitives of a breaker's shared state: the standard library's, or
//! loom's when the crate is built with `--cfg breakwater_loom` for the model checks in
//! `tests/loom.rs` (which explore every interleaving of a few threads).

#[cfg(breakwater_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
#[cfg(breakwater_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(breakwater_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
#[cfg(not(breakwater_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
