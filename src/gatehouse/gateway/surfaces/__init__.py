"""The client surfaces: one adapter per API a client speaks (see `base.Surface`)."""
