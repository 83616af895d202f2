//! A counting global allocator for tests and benchmarks: heap allocations (`alloc`,
//! `alloc_zeroed`, `realloc`) made on a thread while it has counting switched on, plus a
//! process-wide total over every thread. A test binary installs it with
//! `#[global_allocator] static GLOBAL: retina_tests::alloc::Counting = retina_tests::alloc::Counting;`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering},
};

pub struct Counting;

/// Allocations on threads that switched counting on.
static COUNTED: AtomicU64 = AtomicU64::new(0);
/// Allocations on every thread, always.
static ALL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Const-initialised and without a destructor, so reading it from inside the
    /// allocator never allocates or recurses.
    static ON: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    ALL.fetch_add(1, Ordering::Relaxed);
    if ON.try_with(Cell::get).unwrap_or(false) {
        COUNTED.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations this thread makes while `f` runs.
pub fn count<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = COUNTED.load(Ordering::Relaxed);
    ON.with(|c| c.set(true));
    let out = f();
    ON.with(|c| c.set(false));
    (COUNTED.load(Ordering::Relaxed) - before, out)
}

/// Allocations by every thread of the process so far.
pub fn total() -> u64 {
    ALL.load(Ordering::Relaxed)
}
