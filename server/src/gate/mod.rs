//! The eBPF gate: the only module that imports aya (loader, pinned maps, blocklist sync).
