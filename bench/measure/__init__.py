"""The measuring side: hardware discovery, timing, the workload contract, plans and suites,
the runner. It imports torch; the reading side (bench.report) never imports this package."""
