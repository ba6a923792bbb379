"""The sparse direct convolution across threads: the work split, results with several threads,
and PyTorch's thread count around a kernel launch."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from adapmtl.inference.layers import DirectSparseConv2d, _balanced_bounds
from adapmtl.inference.optimize import relative_error
from adapmtl.inference.threads import numba_available, numba_max

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def channel_pointers(counts: np.ndarray) -> np.ndarray:
    """A ``ptr`` array of the geometry's shape [out, blocks, taps + 1] whose output channel c
    holds ``counts[c]`` nonzeros (one block, one tap)."""
    ends = np.cumsum(counts)
    starts = ends - counts
    return np.stack([starts, ends], axis=1)[:, None, :].astype(np.int64)


@pytest.mark.parametrize("seed", range(20))
def test_work_split_covers_every_channel_once_in_balanced_chunks(seed):
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 40))
    counts = rng.integers(0, 50, size=channels) * (rng.random(channels) < 0.8)
    chunks = int(rng.integers(1, 6))
    bounds = _balanced_bounds(channel_pointers(counts), chunks)
    assert bounds[0] == 0 and bounds[-1] == channels
    assert np.all(np.diff(bounds) > 0)  # contiguous, non-empty, every channel exactly once
    assert len(bounds) - 1 <= chunks
    sums = [int(counts[lo:hi].sum()) for lo, hi in itertools.pairwise(bounds)]
    # a chunk overshoots its equal share by less than one channel's nonzeros
    assert max(sums) <= counts.sum() / chunks + counts.max()


@needs_numba
@pytest.mark.skipif(
    numba_available() and numba_max() < 2, reason="numba can use only one thread here"
)
@pytest.mark.parametrize(("cin", "cout", "groups"), [(8, 16, 1), (8, 12, 2), (6, 6, 6)])
def test_direct_conv_with_two_threads_matches_dense(cin, cout, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups)
    with torch.no_grad():
        # unbalanced: the first output channels hold most nonzeros, so the split is uneven
        keep = torch.rand_like(conv.weight) < torch.linspace(0.9, 0.1, cout).view(-1, 1, 1, 1)
        conv.weight.mul_(keep)
    x = torch.randn(2, cin, 9, 11)
    torch.set_num_threads(2)  # conftest restores
    with torch.no_grad():
        got = DirectSparseConv2d(conv)(x)
        expected = conv(x)
    assert torch.get_num_threads() == 2
    assert relative_error(got, expected) < 1e-5


LAUNCH = """
import json

import torch
from torch import nn
from adapmtl.inference.layers import DirectSparseConv2d
from adapmtl.inference.threads import numba_max

conv = nn.Conv2d(8, 8, 3, padding=1)
layer = DirectSparseConv2d(conv)
x = torch.randn(1, 8, 6, 6)
seen = []
for wanted in (1, numba_max() + 1, 1):
    torch.set_num_threads(wanted)
    with torch.no_grad():
        layer(x)
    seen.append((wanted, torch.get_num_threads()))
print(json.dumps(seen))
"""


@needs_numba
def test_kernel_launch_keeps_torch_thread_count():
    # The first launch in a process starts numba's OpenMP pool, which resets the count PyTorch
    # reads; a fresh interpreter makes this independent of what other tests launched before.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert [wanted for wanted, _ in seen] == [got for _, got in seen], seen
