//! `shared::malloc::limit_arenas` in a process of its own (arenas made by
//! other tests' threads would stay): after it, threads that allocate at the
//! same time share at most 2 arenas; without it glibc makes one per
//! contending thread (up to 8 per core).
#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(unsafe_code)]

/// Arenas glibc reports (`<heap nr=` entries of `malloc_info`).
fn arenas() -> usize {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream allocates the buffer, malloc_info writes its
    // XML report there, fclose flushes it; the buffer is read, then freed.
    let xml = unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        assert!(!f.is_null(), "open_memstream");
        assert_eq!(libc::malloc_info(0, f), 0, "malloc_info");
        libc::fclose(f);
        let s = std::slice::from_raw_parts(buf.cast::<u8>(), len);
        let xml = String::from_utf8_lossy(s).into_owned();
        libc::free(buf.cast());
        xml
    };
    xml.matches("<heap nr=").count()
}

/// 16 threads allocating and freeing at once, in small blocks (below the
/// mmap threshold, so they come from arenas).
fn contend() {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                for i in 0..20_000usize {
                    let v = vec![i as u8; 64 + i % 4000];
                    std::hint::black_box(&v);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

#[test]
fn at_most_two_arenas_after_limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        eprintln!("MALLOC_ARENA_MAX is set: the environment decides, nothing to test");
        return;
    }
    assert_eq!(shared::malloc::limit_arenas(), Some(2));
    contend();
    let n = arenas();
    assert!(n <= 2, "{n} arenas after limit_arenas()");
}
