"""Gradients at any point and the standard attribution maps, on every backend.

=====================  =========================================================
`gradients`            gradients of a per-sample target at any points, batched
`weight_gradients`     the gradient of a target (or a loss) for every weight
`grad_cam`             Grad-CAM and Grad-CAM++ heatmaps at a convolution
`saliency`             vanilla gradient and SmoothGrad saliency maps
`integrated_gradients` Integrated Gradients attributions of the inputs
`resize_maps`          heatmaps resized (bilinear) to an image's size
=====================  =========================================================

What a target can be is in `kerasurgery.attribution.targets`; the graph the
gradients are taken through is `kerasurgery.passes.perturb`; the backend
code (``tf.GradientTape``, ``jax.value_and_grad``, ``torch.autograd``) is
`kerasurgery.runtime.autodiff`, the only place that names a backend.
"""
