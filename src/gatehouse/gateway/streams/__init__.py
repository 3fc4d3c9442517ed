"""Live streams: every in-flight gateway request, listed across replicas and terminable from any of them."""
