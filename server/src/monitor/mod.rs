//! Monitor: latency histograms, counters and the Prometheus exposition.
