//! The C allocator's settings for a process that must keep a flat footprint for months.
//!
//! glibc's defaults suit short programs: a heap arena per thread (up to 8 per core), and a
//! threshold for `mmap`-backed allocations that rises to 32 MiB once a large block has
//! been freed. Start-up reads and parses several MiB of kernel BTF; with the rising
//! threshold, later large buffers land in the heap around long-lived small blocks, and
//! the heap cannot shrink past them. So the daemon fixes the threshold (blocks of 128 KiB
//! and more are mapped and unmapped on free), caps the arenas at two, and hands free heap
//! pages back once start-up is over and then every few exports (the export path's
//! transport allocates and frees a few dozen blocks each time). Other C libraries:
//! nothing to do.

/// Blocks at least this large get their own mapping, returned to the kernel on free.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the allocator settings; call first thing in `main`, before threads start.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes glibc's tuning parameters; no allocation is in flight
    // on another thread yet.
    unsafe {
        // An explicit MALLOC_ARENA_MAX in the environment wins.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns free heap pages to the kernel (after start-up's transient allocations).
pub fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and only releases memory no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}
