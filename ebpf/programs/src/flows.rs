//! L4 flow counters.

use aya_ebpf::bindings::BPF_NOEXIST;
use nodemesh_common::{
    flow::{FlowKey, FlowStats},
    stats::MAP_UPDATE_ERRORS,
};

use crate::{maps::FLOW_STATS, stats};

/// This CPU's counters for `key`, created zeroed if the flow is new.
#[inline(always)]
pub fn counters(key: &FlowKey) -> Option<&'static mut FlowStats> {
    if let Some(p) = FLOW_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value of a live map entry; only this CPU writes it.
        return Some(unsafe { &mut *p });
    }
    let zero = FlowStats::default();
    // Another CPU may create it first: EEXIST is fine.
    let _ = FLOW_STATS.insert(key, &zero, BPF_NOEXIST as u64);
    match FLOW_STATS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(p) => Some(unsafe { &mut *p }),
        None => {
            stats::inc(MAP_UPDATE_ERRORS);
            None
        }
    }
}
