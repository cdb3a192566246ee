//! [`Oldest`]: the `k` smallest of many items in memory for `k` only, for passes over a
//! queue directory too large to hold as a list (the daemon's refill of its active queue,
//! the queue listing's batches).

use std::collections::BinaryHeap;

/// The `k` smallest of the items offered (the oldest queue IDs), in memory for `k` only.
pub struct Oldest<T: Ord> {
    k: usize,
    heap: BinaryHeap<T>,
    /// More than `k` were offered: some were left out.
    more: bool,
}

impl<T: Ord> Oldest<T> {
    pub fn new(k: usize) -> Self {
        Oldest {
            k,
            heap: BinaryHeap::with_capacity(k.min(65_536)),
            more: false,
        }
    }

    /// Offer one; `small` first says whether it could be kept, so a caller allocates only
    /// for those.
    pub fn wants(&self, small: impl FnOnce(&T) -> bool) -> bool {
        self.heap.len() < self.k || self.heap.peek().is_some_and(small)
    }

    pub fn offer(&mut self, x: T) {
        if self.heap.len() < self.k {
            self.heap.push(x);
        } else {
            self.more = true;
            if self.heap.peek().is_some_and(|top| x < *top) {
                self.heap.pop();
                self.heap.push(x);
            }
        }
    }

    /// Note one offered and not kept (`wants` said no).
    pub fn skip(&mut self) {
        self.more = true;
    }

    /// The kept items, smallest first, and whether some were left out.
    pub fn finish(self) -> (Vec<T>, bool) {
        let mut v = self.heap.into_vec();
        v.sort();
        (v, self.more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oldest(k: usize, items: &[u32]) -> (Vec<u32>, bool) {
        let mut o = Oldest::new(k);
        for &x in items {
            if o.wants(|top| x < *top) {
                o.offer(x);
            } else {
                o.skip();
            }
        }
        o.finish()
    }

    #[test]
    fn oldest_keeps_the_k_smallest_sorted_and_says_if_more() {
        assert_eq!(oldest(3, &[9, 2, 7, 1, 8, 3]), (vec![1, 2, 3], true));
        assert_eq!(oldest(3, &[5, 4]), (vec![4, 5], false));
        assert_eq!(
            oldest(2, &[5, 4]),
            (vec![4, 5], false),
            "exactly k: none left"
        );
        assert_eq!(oldest(0, &[1]), (vec![], true));
        assert_eq!(oldest(4, &[]), (vec![], false));
    }
}
