"""The effective configuration (`gatehouse config show`), live reload (`gatehouse reload`, SIGHUP,
POST /admin/reload) and secrets for rotation (`gatehouse secret generate`)."""
