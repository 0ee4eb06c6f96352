"""On-demand benchmarks of the Hokusai platform (`python -m bench.run`); never part of `make test`."""
