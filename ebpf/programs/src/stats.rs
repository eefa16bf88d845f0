//! Datapath-wide per-CPU counters.

use crate::maps::STATS;

/// Adds `n` to counter `index` (a `nodemesh_common::stats` constant).
#[inline(always)]
pub fn add(index: u32, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of a live map; only this CPU writes it.
        unsafe { *slot += n };
    }
}

/// Adds one to counter `index`.
#[inline(always)]
pub fn inc(index: u32) {
    add(index, 1);
}
