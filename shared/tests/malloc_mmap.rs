//! `shared::malloc::fix_mmap_threshold` in a process of its own: after it,
//! a block of a few MiB allocated after an equal one was freed still comes
//! from `mmap` (and goes back to the system when freed); without it glibc
//! raises its threshold past the freed block's size and serves the second
//! one from the heap.
#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(unsafe_code)]

/// Blocks currently mmapped by malloc.
fn mmapped_blocks() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    unsafe { libc::mallinfo2() }.hblks
}

#[test]
fn a_large_block_freed_does_not_move_the_next_ones_onto_the_heap() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        eprintln!("MALLOC_MMAP_THRESHOLD_ is set: the environment decides, nothing to test");
        return;
    }
    assert_eq!(shared::malloc::fix_mmap_threshold(), Some(128 << 10));
    let first = vec![1u8; 4 << 20];
    std::hint::black_box(&first);
    drop(first);
    let before = mmapped_blocks();
    let second = vec![2u8; 4 << 20];
    std::hint::black_box(&second);
    let during = mmapped_blocks();
    drop(second);
    assert_eq!(
        during,
        before + 1,
        "the second 4 MiB block is mmapped (blocks: {before} before, {during} while held)"
    );
}
