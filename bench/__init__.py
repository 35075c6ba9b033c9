"""Benchmarks that write `bench/results/`, run from the repository root as
`python -m bench.NAME` (bench/README.md). They import the `openr` package and
each other (`bench.search_adapters`), never the tests; the package does not ship them."""
