"""tollkeep benchmarks: ``python -m bench.run`` (``make bench``). See bench/README.md."""
