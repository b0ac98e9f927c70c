"""delete_channels inside ResNet50 and MobileNetV2: exact removal, and the parameters it saves.

The reference is the original model (weights=None, random BatchNormalization
statistics) with the deleted filters zeroed and ``gamma = beta = 0`` in the
BatchNormalizations they pass, so the channels are exactly zero downstream
(`zeroing.zeroed_copy`, written out per case). The parameter count the
deletion saves is computed from the original layers' shapes, by hand.
"""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
from zeroing import batchnorm, filters, layer_named, randomize_batchnorms, run, zeroed_copy
from zoo import assert_roundtrip, assert_unchanged, snapshot

import kerasurgery as ks

A = keras.applications


@pytest.fixture(autouse=True)
def free_memory():
    yield
    keras.backend.clear_session()
    gc.collect()


def build(factory):
    model = factory(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    assert randomize_batchnorms(model) > 0
    data = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    return model, data


def kernel_shape(model, name):
    return tuple(layer_named(model, name).kernel.shape)


def exact(model, data, point, channels, edits):
    before = snapshot(model)
    pruned = ks.delete_channels(model, point, channels)
    got, want = run(pruned, data), run(zeroed_copy(model, edits), data)
    scale = np.abs(want).max()
    assert scale > 1e-3  # not a degenerate output
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, scale), rtol=1e-5)
    assert_unchanged(model, before)
    return pruned


def test_resnet50_inner_conv():
    model, data = build(A.ResNet50)
    c = [3, 17, 40]
    pruned = exact(model, data, "conv2_block1_1_conv", c,
                   {"conv2_block1_1_conv": filters(c), "conv2_block1_1_bn": batchnorm(c)})
    k1, k2 = kernel_shape(model, "conv2_block1_1_conv"), kernel_shape(model, "conv2_block1_2_conv")
    per_channel = (np.prod(k1[:-1]) + 1) + 4 + np.prod(k2[:-2]) * k2[-1]  # filter + bias, BN, next kernel rows
    assert model.count_params() - pruned.count_params() == len(c) * per_channel
    assert pruned.get_layer("conv2_block1_2_conv").kernel.shape[2] == 64 - len(c)


@pytest.mark.slow
def test_resnet50_residual_stage():
    """The last conv of a block feeds an Add: every block of the stage, and the shortcut, lose the channel."""
    model, data = build(A.ResNet50)
    convs = ["conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv", "conv2_block3_3_conv"]
    edits = {name: filters([5]) for name in convs}
    edits.update({name.replace("_conv", "_bn"): batchnorm([5]) for name in convs})
    pruned = exact(model, data, "conv2_block1_3_conv", [5], edits)
    readers = ["conv2_block2_1_conv", "conv2_block3_1_conv", "conv3_block1_0_conv", "conv3_block1_1_conv"]
    saved = sum(np.prod(kernel_shape(model, n)[:-1]) + 1 + 4 for n in convs)
    saved += sum(np.prod(kernel_shape(model, n)[:-2]) * kernel_shape(model, n)[-1] for n in readers)
    assert model.count_params() - pruned.count_params() == saved


def test_mobilenetv2_expansion_through_depthwise(tmp_path):
    model, data = build(A.MobileNetV2)
    c = [2, 7, 100]
    pruned = exact(model, data, "block_3_expand", c, {
        "block_3_expand": filters(c, bias=False), "block_3_expand_BN": batchnorm(c),
        "block_3_depthwise_BN": batchnorm(c),  # the depthwise filters of those channels see zeros only
    })
    expand, depthwise = kernel_shape(model, "block_3_expand"), kernel_shape(model, "block_3_depthwise")
    project = kernel_shape(model, "block_3_project")
    per_channel = np.prod(expand[:-1]) + 4 + np.prod(depthwise[:-2]) + 4 + project[-1]
    assert model.count_params() - pruned.count_params() == len(c) * per_channel
    assert_roundtrip(pruned, data, tmp_path)


def test_mobilenetv2_residual_add():
    model, data = build(A.MobileNetV2)
    edits = {"block_1_project": filters([4], bias=False), "block_1_project_BN": batchnorm([4]),
             "block_2_project": filters([4], bias=False), "block_2_project_BN": batchnorm([4])}
    pruned = exact(model, data, "block_2_project", [4], edits)
    assert pruned.get_layer("block_1_project").filters == 23
    saved = sum(np.prod(kernel_shape(model, n)[:-1]) + 4 for n in ("block_1_project", "block_2_project"))
    saved += sum(kernel_shape(model, n)[-1] for n in ("block_2_expand", "block_3_expand"))
    assert model.count_params() - pruned.count_params() == saved
