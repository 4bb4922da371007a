"""The GEMM convolutions equal MLX's own conv ops, and streaming them in chunks equals one call."""

import mlx.core as mx
import numpy as np
import pytest

from rolekit.codec.conv import CausalConv1d, CausalConvTranspose1d, _conv1d, _conv_transpose1d


@pytest.mark.parametrize(
    "cin, cout, k, stride, dilation",
    [
        (1, 4, 7, 1, 1),
        (4, 6, 8, 4, 1),
        (4, 6, 3, 1, 2),
        (4, 4, 1, 1, 1),
        (5, 3, 4, 2, 1),
        (3, 3, 5, 2, 1),
        (3, 3, 4, 2, 2),
    ],
)
def test_conv1d_matches_mlx(cin, cout, k, stride, dilation):
    x = mx.random.normal((2, 40, cin), key=mx.random.key(0))
    w = mx.random.normal((cout, k, cin), key=mx.random.key(1))  # MLX layout [out, k, in]
    ours = _conv1d(x, w.transpose(1, 2, 0), stride, dilation)
    np.testing.assert_allclose(
        np.array(ours), np.array(mx.conv1d(x, w, stride=stride, dilation=dilation)), atol=1e-5
    )


@pytest.mark.parametrize(
    "cin, cout, k, stride, groups", [(6, 4, 8, 4, 1), (5, 5, 4, 2, 5), (3, 2, 5, 2, 1), (4, 4, 5, 2, 4)]
)
def test_conv_transpose1d_matches_mlx(cin, cout, k, stride, groups):
    x = mx.random.normal((2, 7, cin), key=mx.random.key(2))
    w = mx.random.normal((cout, k, cin // groups), key=mx.random.key(3))
    ours = _conv_transpose1d(x, w.transpose(2, 1, 0) if groups == 1 else w[:, :, 0].T, stride)
    ref = mx.conv_transpose1d(x, w, stride=stride, groups=groups)
    np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-5)


def _randomize(module, seed):
    module.update(
        {k: mx.random.normal(v.shape, key=mx.random.key(seed)) for k, v in module.parameters().items()}
    )


@pytest.mark.parametrize("replicate", [False, True])
def test_streaming_conv_chunks_equal_one_call(replicate):
    conv = CausalConv1d(3, 5, 4, stride=2, replicate=replicate)
    _randomize(conv, 4)
    x = mx.random.normal((2, 48, 3), key=mx.random.key(5))
    whole = conv(x, {}, "c")
    state: dict = {}
    parts = [conv(x[:, s : s + 8], state, "c") for s in range(0, 48, 8)]
    np.testing.assert_allclose(np.array(mx.concatenate(parts, axis=1)), np.array(whole), atol=1e-5)
    # replicate padding repeats the first sample; zero padding does not
    first = np.array(conv(x[:, :2] * 0 + 1.0, {}, "c"))
    second = np.array(conv(mx.ones((2, 2, 3)), {"c": mx.zeros((2, 2, 3))}, "c"))
    assert np.allclose(first, second) != replicate


@pytest.mark.parametrize("groups", [1, 4])
def test_streaming_convtr_chunks_equal_trimmed_one_call(groups):
    convtr = CausalConvTranspose1d(4, 4, 6, stride=3, groups=groups, bias=groups == 1)
    _randomize(convtr, 6)
    x = mx.random.normal((2, 12, 4), key=mx.random.key(7))
    whole = convtr(x, {}, "t")  # trims K - S on the right
    assert whole.shape == (2, 36, 4)
    state: dict = {}
    parts = [convtr(x[:, s : s + 3], state, "t") for s in range(0, 12, 3)]
    np.testing.assert_allclose(np.array(mx.concatenate(parts, axis=1)), np.array(whole), atol=1e-5)
