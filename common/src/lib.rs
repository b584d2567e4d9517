//! Types shared by the XDP gate (kernel) and the server (userspace): map names, sizes, reason codes.
#![no_std]

/// Directory under bpffs where the gate pins its maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/subzero";
