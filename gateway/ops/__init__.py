"""Running popgate: configuration, Prometheus metrics, the admin listener and status page,
and worker processes sharing one port."""
