"""Diagnostics for operators: reading LOG_FILE and its rotated files, and the support bundle for escalations."""
