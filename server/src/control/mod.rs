//! Control plane: key ring, revocations and other read-mostly state replicated to every shard.
