//! Shard-local bucketized cuckoo cache of validated tokens.
