//! XDP gate: drops blocklisted and rate-limited sources before they cost a syscall (filled in by the eBPF gate issue).
#![no_std]
#![no_main]

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
