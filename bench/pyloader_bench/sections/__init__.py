"""The benchmark's sections, one module per group: each `bench_*` runs its measurements in fresh worker
processes (driver.run_worker) and returns its part of results.json."""
