"""Backups: consistent copies with manifests and generations, optional encryption, verification by restoring
into a scratch database, and a safe restore."""
