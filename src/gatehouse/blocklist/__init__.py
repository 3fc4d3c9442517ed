"""The IP/CIDR blocklist: addresses and networks refused on every route but the health probes, on every replica."""
