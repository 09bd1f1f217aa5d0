//! Prometheus text exposition of a registry.
