//! Spreading weighted backends over a service's slot table.
//!
//! `connect4/6` pick a slot uniformly at random, so a backend's share of
//! new connections is its share of slots. Weights are reduced by their
//! greatest common divisor (90/10 becomes 9+1 slots, equal weights one slot
//! each); when the reduced total exceeds the slot limit the slots are
//! apportioned by largest remainder, so each share is off by less than one
//! slot (under 0.1 % at the default limit of 1024).

/// Why a set of weights has no slot layout.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Every weight is zero.
    #[error("backend weights sum to zero")]
    ZeroTotal,
    /// The slot limit is zero.
    #[error("the slot limit must be at least 1")]
    NoSlots,
}

/// For each slot, the index of the backend it holds.
pub fn layout(weights: &[u32], max_slots: u32) -> Result<Vec<usize>, SlotError> {
    if max_slots == 0 {
        return Err(SlotError::NoSlots);
    }
    let g = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0u64, |a, w| gcd(a, u64::from(w)));
    if g == 0 {
        return Err(SlotError::ZeroTotal);
    }
    let reduced: Vec<u64> = weights.iter().map(|w| u64::from(*w) / g).collect();
    let total: u64 = reduced.iter().sum();
    let counts: Vec<u64> = if total <= u64::from(max_slots) {
        reduced
    } else {
        apportion(&reduced, total, u64::from(max_slots))
    };
    let mut slots = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
    // Interleave so that a prefix of the table is already a fair sample.
    let mut left = counts.clone();
    while left.iter().any(|c| *c > 0) {
        for (i, c) in left.iter_mut().enumerate() {
            if *c > 0 {
                slots.push(i);
                *c -= 1;
            }
        }
    }
    Ok(slots)
}

/// Largest-remainder apportionment of `n` slots.
fn apportion(weights: &[u64], total: u64, n: u64) -> Vec<u64> {
    let mut counts: Vec<u64> = weights.iter().map(|w| w * n / total).collect();
    let mut given: u64 = counts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((weights[i] * n) % total));
    for i in order {
        if given >= n {
            break;
        }
        if weights[i] > 0 {
            counts[i] += 1;
            given += 1;
        }
    }
    counts
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(slots: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for s in slots {
            c[*s] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_get_one_slot_each() {
        assert_eq!(layout(&[1, 1, 1], 1024).unwrap(), vec![0, 1, 2]);
        assert_eq!(layout(&[7, 7], 1024).unwrap(), vec![0, 1]);
    }

    #[test]
    fn ninety_ten_is_exact() {
        let s = layout(&[90, 10], 1024).unwrap();
        assert_eq!(shares(&s, 2), vec![9, 1]);
    }

    #[test]
    fn zero_weight_backend_gets_no_slot() {
        let s = layout(&[0, 5, 5], 1024).unwrap();
        assert_eq!(shares(&s, 3), vec![0, 1, 1]);
    }

    #[test]
    fn all_zero_is_an_error() {
        assert_eq!(layout(&[0, 0], 1024), Err(SlotError::ZeroTotal));
        assert_eq!(layout(&[], 1024), Err(SlotError::ZeroTotal));
    }

    #[test]
    fn large_totals_are_apportioned_within_one_slot() {
        let w = [1000, 999, 1];
        let s = layout(&w, 1024).unwrap();
        assert_eq!(s.len(), 1024);
        let c = shares(&s, 3);
        let total: u32 = w.iter().sum();
        for (i, wi) in w.iter().enumerate() {
            let ideal = f64::from(*wi) * 1024.0 / f64::from(total);
            assert!(
                (c[i] as f64 - ideal).abs() < 1.0,
                "backend {i}: {} vs {ideal}",
                c[i]
            );
        }
    }
}
