"""Quantization workbench: from calibration statistics to a quantized model and its error.

==============  =============================================================
`methods`       `ranges`: a `Range` per point from a `Calibration` (minmax,
                percentile, entropy, mse; signed, unsigned, asymmetric; per
                tensor or per channel)
`thresholds`    the histogram searches behind them (numpy)
`ranges`        `Range`, `Ranges` and their JSON form
`fake`          `fake_quantize`: the model with quantize-dequantize at points
`error`         `quantization_error`: SQNR, MSE, cosine and max error per
                point, both models in one compiled pass
`export`        TensorRT calibration caches (and the tensor names of points)
==============  =============================================================

`kerasurgery.Calibration.ranges` is `methods.ranges`. See docs/quantization.md.
"""
