"""The soak (`make soak`, `python -m bench.soak`): hours of mixed traffic against the local HA topology while operators
act, then the checks that nothing leaked, grew or went missing. See bench/README.md, "Soak"."""
