//! Request handlers: routes an HTTP request to a gateway operation over shard-local state.
