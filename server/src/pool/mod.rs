//! Shard-local pool of pre-signed tokens per (client, audience, scope set).
