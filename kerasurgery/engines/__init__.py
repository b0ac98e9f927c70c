"""Engines: running `collect` and `calibrate` somewhere else than in this process.

The public `kerasurgery.collect` and `kerasurgery.calibrate` are
`kerasurgery.engines.dispatch.collect` / `.calibrate`: given a
`ray.data.Dataset` they hand the work to `kerasurgery.engines.ray` (one model
per Ray actor, results merged on the driver); any other data runs in process
(`kerasurgery.runtime.collect`, `kerasurgery.stats.calibrate`). Ray is never
imported unless the data is already a Ray dataset. See docs/cluster.md.
"""
