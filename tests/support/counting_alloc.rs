//! A global allocator that forwards to the system allocator and counts the live heap: bytes in
//! total and allocations by requested size. Shared by `tests/session_memory.rs` and
//! `examples/tls_conn_memory.rs` (each includes this file with `#[path]` and installs
//! [`Counting`] as its `#[global_allocator]`); not part of `support`'s module tree, so no other
//! test binary carries it.
// A counting `GlobalAlloc` is unsafe by nature (it forwards raw pointers to `System`).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Live heap bytes of the whole process (requested sizes, not the allocator's classes).
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Live allocations by requested size (the last slot: this size or more).
const SIZES: usize = 20_000;
static BY_SIZE: [AtomicIsize; SIZES + 1] = [const { AtomicIsize::new(0) }; SIZES + 1];

fn count(size: usize, delta: isize) {
    LIVE.fetch_add(size as isize * delta, Ordering::Relaxed);
    BY_SIZE[size.min(SIZES)].fetch_add(delta, Ordering::Relaxed);
}

/// Live heap bytes now.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Live allocations by requested size now (index: the size; the last: that size or more).
pub fn sizes() -> Vec<isize> {
    BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

pub struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a side
// effect that never touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        p
    }
}
