//! Command-line interface (clap): serve, keygen, token, stats, block, audit.
