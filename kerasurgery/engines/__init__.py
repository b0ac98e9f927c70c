"""Engines: running `collect`, `calibrate` and `gradients` somewhere else than in this process.

The public `kerasurgery.collect`, `kerasurgery.calibrate` and
`kerasurgery.gradients` are those of `kerasurgery.engines.dispatch`: given a
`ray.data.Dataset` they hand the work to `kerasurgery.engines.ray` (and
`kerasurgery.engines.ray_gradients`): one model per Ray actor, results merged
on the driver; any other data runs in process (`kerasurgery.runtime.collect`,
`kerasurgery.stats.calibrate`, `kerasurgery.attribution.gradients`). Ray is
never imported unless the data is already a Ray dataset. See docs/cluster.md.
"""
