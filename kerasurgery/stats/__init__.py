"""Statistics over a dataset: `calibrate` and what it returns.

==============  =============================================================
`calibrate`     the streaming pass: one compiled step per batch, merged on
                the host
`reduce`        the in-graph reductions of each point (layouts, sampling)
`grid`          mergeable histograms on a power-of-two grid
`moments`       the running statistics of one point and their merge (host)
`results`       `PointStats`, `Calibration`, `merge` (JSON round trip)
==============  =============================================================
"""
