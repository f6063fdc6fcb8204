//! What a buffer costs the allocator, for the cache's weigher: the model of the daemon's
//! allocator's size classes, checked against the process's resident memory by
//! `loadtest/memory`.

/// The bytes an allocation of `n` bytes takes from the allocator: the daemon's is mimalloc
/// (`main.rs`), whose size classes step by 8 bytes up to 64, then four per power of two (80, 96,
/// 112, 128, 160, ...), with no header; nothing for an empty buffer.
pub const fn alloc_size(n: usize) -> usize {
    if n <= 64 {
        return (n + 7) & !7;
    }
    let step = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros() - 2);
    (n + step - 1) & !(step - 1)
}

/// Heap bytes of a list of strings: the list's buffer and each string's.
pub(crate) fn heap_strings(t: &[String]) -> usize {
    alloc_size(std::mem::size_of_val(t)) + t.iter().map(|s| alloc_size(s.capacity())).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::alloc_size;

    #[test]
    fn sizes_round_up_to_mimallocs_classes() {
        let classes = [
            (0, 0),
            (1, 8),
            (8, 8),
            (9, 16),
            (64, 64),
            (65, 80),
            (80, 80),
            (81, 96),
            (129, 160),
            (256, 256),
            (257, 320),
            (410, 448),
            (1000, 1024),
        ];
        for (n, chunk) in classes {
            assert_eq!(alloc_size(n), chunk, "{n}");
        }
    }
}
