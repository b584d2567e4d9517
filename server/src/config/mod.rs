//! Configuration: TOML file, flags on top, every limit validated once at start.
