"""What operators watch: liveness and readiness, Prometheus metrics, the stored traffic snapshot and the health
detail, the statement sampler, and the live feed as server-sent events."""
