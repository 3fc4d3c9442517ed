"""Console sessions: login (lockout and backoff), logout."""
