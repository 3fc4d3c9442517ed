"""Benchmarks of Gatehouse; `make bench` runs `python -m bench` (bench/run.py). See bench/README.md."""
