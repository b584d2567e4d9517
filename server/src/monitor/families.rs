//! The metric family registry: the `# HELP` and `# TYPE` of every `/metrics` family, in one
//! place, so the [`Board`](super::Board) writes them exactly once per family and no renderer
//! can forget them.
//!
//! Renderers write samples only. A family missing here still gets a `# HELP` (saying it is
//! undocumented) and a `# TYPE` guessed from its name (`_total`: counter, else gauge), so the
//! exposition stays valid; `server/tests/e2e_limits.rs` fails on any such family, so a new one
//! must be added here.

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count since start (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets with `_bucket`, `_sum`, `_count`.
    Histogram,
    /// Quantiles with `_sum`, `_count`.
    Summary,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// The `# HELP` text of families not in [`FAMILIES`].
pub const UNDOCUMENTED: &str = "Undocumented subzero metric (add it to monitor/families.rs).";

use Kind::{Counter as C, Gauge as G};

/// Every family: name, type, help.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    // Latency (monitor/hist.rs).
    ("subzero_request_duration_seconds", Kind::Histogram, "Server time per request by shard and operation, in fixed 1-2-5 buckets from 1 us to 10 s."),
    ("subzero_request_latency_seconds", Kind::Summary, "Exact server-time quantiles per shard and operation since start (hdrhistogram)."),
    ("subzero_request_p99_seconds", G, "p99 server time per shard and operation over the last one-second interval (hdrhistogram)."),
    // Perf events and CPU (monitor/perf.rs).
    ("subzero_perf_available", G, "1 when the shard's perf-event counter opened, 0 when the kernel or hardware cannot count it."),
    ("subzero_perf_task_clock_seconds_total", C, "CPU time of the shard thread counted by the task-clock perf event."),
    ("subzero_perf_context_switches_total", C, "Context switches of the shard thread (perf event)."),
    ("subzero_perf_cpu_migrations_total", C, "CPU migrations of the shard thread (perf event)."),
    ("subzero_perf_page_faults_total", C, "Page faults of the shard thread (perf event)."),
    ("subzero_perf_cycles_total", C, "CPU cycles of the shard thread (hardware perf event)."),
    ("subzero_perf_instructions_total", C, "Instructions retired by the shard thread (hardware perf event)."),
    ("subzero_perf_cache_misses_total", C, "Cache misses of the shard thread (hardware perf event)."),
    ("subzero_perf_branch_misses_total", C, "Branch misses of the shard thread (hardware perf event)."),
    ("subzero_perf_ipc", G, "Instructions per cycle of the shard thread over the last interval."),
    ("subzero_shard_cpu_utilization", G, "Share of one CPU the shard thread used over the last interval (0 to 1)."),
    ("subzero_shard_cpu_seconds_total", C, "CPU time of the shard thread (user and kernel, from the thread's CPU clock)."),
    ("subzero_degraded", G, "1 while the degradation detector holds this reason raised for the shard."),
    ("subzero_monitor_enabled", G, "1 when per-request histograms and perf counters are recorded ([monitor] enabled)."),
    // Process (monitor/process.rs).
    ("process_resident_memory_bytes", G, "Resident memory size in bytes."),
    ("process_virtual_memory_bytes", G, "Virtual memory size in bytes."),
    ("process_open_fds", G, "Number of open file descriptors."),
    ("process_max_fds", G, "Maximum number of open file descriptors."),
    ("process_cpu_seconds_total", C, "Total user and system CPU time spent in seconds."),
    ("process_start_time_seconds", G, "Start time of the process since unix epoch in seconds."),
    ("process_threads", G, "Number of OS threads in the process."),
    // Responses and authentication (api/).
    ("subzero_responses_total", C, "Responses by shard and status code."),
    ("subzero_auth_allowed_total", C, "Authenticate requests allowed."),
    ("subzero_auth_denied_total", C, "Authenticate requests denied."),
    ("subzero_jwks_reloads_total", C, "Re-reads of a trusted issuer's JWKS file on an unknown kid."),
    ("subzero_control_busy_total", C, "Requests answered 503 because the control queue was full."),
    ("subzero_control_messages_total", C, "Messages the control plane took from its queue."),
    ("subzero_control_queue_high_water", G, "Most messages waiting in the control queue at once over the last second."),
    ("subzero_control_queue_capacity", G, "Capacity of the control queue (shards answer 503 when it is full)."),
    ("subzero_batch_parts_served_total", C, "Parts of other shards' batches verified here."),
    ("subzero_verifications_total", C, "Signature verifications performed (cache misses after coalescing)."),
    ("subzero_invalid_token_cache_hits_total", C, "Invalid tokens answered from the invalid-token cache."),
    ("subzero_verifications_deferred_total", C, "Verifications left for a later pass because the pass budget was spent."),
    ("subzero_verify_failure_limited_total", C, "Requests refused because their source failed too many verifications."),
    ("subzero_cache_hits_total", C, "Token cache hits."),
    ("subzero_cache_misses_total", C, "Token cache misses."),
    ("subzero_cache_evictions_total", C, "Token cache evictions."),
    ("subzero_cache_expired_total", C, "Token cache entries removed at expiry."),
    ("subzero_cache_entries", G, "Token cache entries."),
    ("subzero_cache_hit_ratio", G, "Token cache hits over lookups since start (0 to 1)."),
    ("subzero_pool_hits_total", C, "Token issues served from the pre-signed pool."),
    ("subzero_pool_misses_total", C, "Token issues that signed inline."),
    ("subzero_pool_refilled_total", C, "Tokens signed into the pool."),
    ("subzero_pool_tokens", G, "Tokens waiting in the pool."),
    ("subzero_pool_hit_ratio", G, "Pool hits over token issues since start (0 to 1)."),
    ("subzero_revoked_jti", G, "Revoked token ids mirrored on the shard."),
    ("subzero_fleet_connected", G, "Whether this node reaches the fleet's Redis on both its connections (1) or not (0)."),
    ("subzero_fleet_applied_revision", G, "Newest fleet change this node has applied."),
    ("subzero_fleet_head_revision", G, "Newest fleet change in Redis, as this node last read it."),
    ("subzero_fleet_lag_changes", G, "Fleet changes in Redis not yet applied by this node."),
    ("subzero_fleet_writes_refused_total", C, "Writes answered 503 because the fleet's Redis was unreachable."),
    ("subzero_fleet_snapshots_loaded_total", C, "Fleet snapshots this node loaded (it joined late or the feed was trimmed past it)."),
    ("subzero_fleet_snapshots_published_total", C, "Fleet snapshots this node published (the feed is trimmed before each)."),
    ("subzero_fleet_ratelimit_unavailable_total", C, "Global rate-limit checks answered by the fail mode (Redis unreachable, lease queue full, a wait bound reached, or a grant too late), by configured mode."),
    ("subzero_fleet_lease_requests_total", C, "Asks for global rate-limit units this shard sent to the lease thread."),
    ("subzero_fleet_lease_units_total", C, "Global rate-limit units Redis granted to this shard."),
    ("subzero_fleet_lease_late_total", C, "Grants that came back more than lease_ms after their ask (their units expired unused; the check asked once more)."),
    ("subzero_fleet_lease_waiting", G, "Global rate-limit checks on this shard waiting for a grant."),
    ("subzero_fleet_leased_keys", G, "Keys with a local lease on this shard."),
    ("subzero_revocations_live", G, "Revocations held by the control plane until their tokens expire."),
    ("subzero_id_jag_seen", G, "Redeemed ID-JAG ids remembered against replay."),
    ("subzero_signing_keys", G, "Verifying keys in the key ring."),
    // Runtime (shard/).
    ("subzero_connections_accepted_total", C, "Connections accepted."),
    ("subzero_connections_closed_total", C, "Connections closed."),
    ("subzero_connections_open", G, "Connections open."),
    ("subzero_connections_rejected_total", C, "Connections refused over the per-shard limit."),
    ("subzero_unix_connections_accepted_total", C, "Connections accepted on the Unix socket."),
    ("subzero_connection_timeouts_total", C, "Connections closed by an idle, request or send timeout."),
    ("subzero_output_overflows_total", C, "Connections closed for unsent output over the limit."),
    ("subzero_http_bad_requests_total", C, "Requests refused as malformed HTTP."),
    ("subzero_http_requests_total", C, "HTTP requests parsed."),
    ("subzero_recv_no_buffer_total", C, "Receives that found no provided buffer."),
    ("subzero_accept_errors_total", C, "Failed accepts."),
    ("subzero_loop_iterations_total", C, "Passes of the shard loop."),
    ("subzero_turns_yielded_total", C, "Connections that yielded their turn at the per-pass limit."),
    ("subzero_recv_paused_total", C, "Receives cancelled while a connection held unparsed input."),
    ("subzero_connections_shed_total", C, "Connections closed to keep buffers under the shard's memory budget."),
    ("subzero_buffered_bytes", G, "Bytes held in connection buffers."),
    ("subzero_mesh_queue_depth", G, "Messages waiting in the shard's inbox."),
    // Rate limits and owned work (api/ratecheck.rs).
    ("subzero_ratelimit_tracked_ips", G, "Sources tracked by the per-source limits."),
    ("subzero_ratelimit_checks_total", C, "Rate-limit checks by rule and result."),
    ("subzero_ratelimit_shadow_denied_total", C, "Checks a shadow rule would have denied."),
    ("subzero_ratelimit_unmatched_total", C, "Rate-limit checks no rule matched."),
    ("subzero_ratelimit_untracked_keys_total", C, "Checks allowed because the key table was full."),
    ("subzero_ratelimit_tracked_keys", G, "Rate-limit keys tracked on the shard."),
    ("subzero_ratelimit_source_limited_total", C, "Requests answered 429 by the per-source route limits."),
    ("subzero_ratelimit_untracked_sources_total", C, "Requests allowed because the source table was full."),
    ("subzero_owned_hops_sent_total", C, "Owned work sent to the owning shard."),
    ("subzero_owned_hops_served_total", C, "Owned work served for other shards."),
    ("subzero_owned_busy_total", C, "Owned work refused 503 (in-flight limit or full edge)."),
    ("subzero_owned_replies_lost_total", C, "Owned-work replies dropped past the held backlog."),
    ("subzero_owned_in_flight", G, "Tickets waiting for owning shards."),
    ("subzero_owned_replies_held", G, "Replies held for full edges."),
    // Cross-app access (api/xaa.rs).
    ("subzero_xaa_delegated_total", C, "Delegated tokens issued."),
    ("subzero_xaa_id_jags_issued_total", C, "ID-JAGs issued."),
    ("subzero_xaa_exchanges_refused_total", C, "Token exchanges refused."),
    ("subzero_xaa_id_jags_redeemed_total", C, "ID-JAGs redeemed."),
    ("subzero_xaa_id_jags_refused_total", C, "ID-JAGs refused."),
    ("subzero_xaa_id_jag_replays_total", C, "ID-JAG replays refused."),
    // Threat and risk (api/security.rs).
    ("subzero_threat_checks_total", C, "Threat checks answered, by event and action."),
    ("subzero_threat_signals_total", C, "Threat signals fired, by name."),
    ("subzero_threat_table_keys", G, "Keys held in this shard's threat tables."),
    ("subzero_threat_table_evictions_total", C, "Keys evicted from full threat tables."),
    ("subzero_threat_parts_total", C, "Keyed parts of threat checks and risk queries: observed locally, sent to their owner shard, or served for another shard."),
    ("subzero_threat_blocks_total", C, "Blocking threat checks: block sent to the control plane, dropped (control queue full), repeated, or the owner's note dropped."),
    ("subzero_security_gather_stray_total", C, "Owner answers that matched no open gather (their ticket had timed out)."),
    ("subzero_risk_assessments_total", C, "Risk assessments answered, by decision."),
    ("subzero_security_gathers_open", G, "Threat checks and risk assessments waiting for owner shards."),
    // Audit (api/audit.rs, control/audit.rs).
    ("subzero_audit_dropped_total", C, "Audit events dropped (buffer or control queue full)."),
    ("subzero_audit_shipped_total", C, "Audit events shipped to the control plane."),
    ("subzero_audit_buffered", G, "Audit events buffered on the shard."),
    ("subzero_audit_events_total", C, "Audit records written."),
    ("subzero_audit_batches_total", C, "Audit batches committed."),
    ("subzero_audit_fsyncs_total", C, "fdatasyncs of the audit log."),
    ("subzero_audit_bytes_total", C, "Bytes written to the audit log."),
    ("subzero_audit_failed_commits_total", C, "Audit commits that failed."),
    ("subzero_audit_checkpoints_total", C, "Signed audit checkpoints written."),
    ("subzero_audit_segments_deleted_total", C, "Audit segments deleted by retention."),
    ("subzero_audit_last_seq", G, "Sequence number of the last audit record."),
    ("subzero_audit_backlog", G, "Audit events waiting for the next group commit."),
    // Gate (gate/snapshot.rs).
    ("subzero_gate_mode", G, "eBPF gate mode (1 for the active one)."),
    ("subzero_gate_packets_total", C, "Packets seen by the eBPF gate, by verdict reason."),
    ("subzero_gate_cpu_packets_total", C, "Packets seen by the eBPF gate, by CPU and reason."),
    ("subzero_gate_blocklist_entries", G, "Entries in the kernel blocklist."),
    ("subzero_gate_read_errors", G, "Whether the last read of the gate maps failed."),
];

/// The registry entry of `name`.
pub fn lookup(name: &str) -> Option<(Kind, &'static str)> {
    FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, kind, help)| (kind, help))
}

/// The family a sample named `name` belongs to: `_bucket`/`_sum`/`_count` samples belong to
/// their histogram or summary.
pub fn family_of(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((Kind::Histogram | Kind::Summary, _)) = lookup(base) {
                if suffix != "_bucket" || lookup(base).map(|l| l.0) == Some(Kind::Histogram) {
                    return base;
                }
            }
        }
    }
    name
}

/// `# TYPE` of a family that is not registered.
pub fn guess_kind(name: &str) -> Kind {
    if name.ends_with("_total") {
        Kind::Counter
    } else {
        Kind::Gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_conventions() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.0).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a family is registered twice");
        for &(name, kind, help) in FAMILIES {
            assert!(!help.is_empty() && help.ends_with('.'), "{name}: {help:?}");
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(
                !name.contains("_ms") && !name.contains("_us") && !name.contains("millis"),
                "{name}: base units"
            );
        }
        assert_eq!(
            family_of("subzero_request_duration_seconds_bucket"),
            "subzero_request_duration_seconds"
        );
        assert_eq!(
            family_of("subzero_request_latency_seconds_sum"),
            "subzero_request_latency_seconds"
        );
        assert_eq!(
            family_of("subzero_request_latency_seconds_bucket"),
            "subzero_request_latency_seconds_bucket"
        );
        assert_eq!(family_of("x_count"), "x_count");
    }

    /// The shipped dashboard and alerting rules name only metrics the server exposes.
    #[test]
    fn dashboards_use_registered_names() {
        for (file, text) in [
            (
                "scripts/grafana-dashboard.json",
                include_str!("../../../scripts/grafana-dashboard.json"),
            ),
            (
                "scripts/prometheus-alerts.yml",
                include_str!("../../../scripts/prometheus-alerts.yml"),
            ),
        ] {
            let mut n_names = 0;
            for (start, _) in text
                .match_indices("subzero_")
                .chain(text.match_indices("process_"))
            {
                if start > 0 && text.as_bytes()[start - 1].is_ascii_alphanumeric() {
                    continue;
                }
                let name: String = text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name == "subzero_" || name.ends_with('_') {
                    continue;
                }
                assert!(
                    lookup(family_of(&name)).is_some(),
                    "{file} names {name}, which /metrics does not have"
                );
                n_names += 1;
            }
            assert!(n_names >= 10, "{file}: {n_names} names");
        }
    }
}
