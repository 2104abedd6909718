//! The allocator setting inference wants.
//!
//! Every layer's output is a fresh buffer, up to tens of MiB at batch 8.
//! glibc serves buffers that large with `mmap` and returns them with
//! `munmap` on free (and trims the heap's top past 128 KiB), so each batch
//! page-faulted on every activation and the kernel zeroed each page again:
//! page clearing and faults were an eighth of EfficientNet-Lite0's time in
//! `perf`. Raising both thresholds keeps freed buffers in the heap for the
//! next batch (BENCHMARKS.md: about +40 % images/s at batch 8 and 32).
//! Peak memory is unchanged; the process keeps its peak instead of handing
//! it back between batches, as a worker that owns its device should.

/// Call at the start of `main`, before other threads exist. A no-op off
/// glibc.
#[allow(unsafe_code)]
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes two allocator parameters; it is called
    // before any other thread could be allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
