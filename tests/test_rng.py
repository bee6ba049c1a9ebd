"""Counter-based per-particle noise (Philox4x32-10): known answers, rank-count and batching
independence, and the moments of the normals."""

import math

import pytest
import torch

from pipeline.rng import ParticleNoise, philox4x32


@pytest.mark.parametrize("counter,key,expected", [
    # Random123's known-answer vectors (kat_vectors, philox4x32 10)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    out = philox4x32([torch.tensor([c], dtype=torch.int64) for c in counter], key)
    assert tuple(int(o) for o in out) == expected


def draws(ids, batches, shapes, device="cpu"):
    """Each particle's sequence of draws, for a shard ``ids`` drawn in micro-batches of ``batches`` rows."""
    noise = ParticleNoise(5, 7, ids, "propagate", device)
    out = {int(i): [] for i in ids}
    for shape in shapes:
        for start in range(0, len(ids), batches):
            rows = list(range(start, min(len(ids), start + batches)))
            z = noise.normal(rows, shape)
            for r, zr in zip(rows, z):
                out[int(ids[r])].append(zr.cpu())
    return out


def test_noise_independent_of_ranks_and_micro_batches():
    shapes = [(3,), (5,), (2, 3)]  # odd sizes: a block's second normal is discarded, the offset still advances
    whole = draws(list(range(10)), 10, shapes)
    for shards in ([[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]], [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]):  # two ranks
        for batch in (1, 3):
            parts = {}
            for shard in shards:
                parts.update(draws(shard, batch, shapes))
            for i in range(10):
                for a, b in zip(whole[i], parts[i]):
                    assert torch.equal(a, b)
    # streams of different particles, cycles and purposes differ
    assert not torch.equal(whole[0][0], whole[1][0])
    a = ParticleNoise(5, 7, [0], "propagate").normal(None, (4,))
    assert not torch.equal(a, ParticleNoise(5, 8, [0], "propagate").normal(None, (4,)))
    assert not torch.equal(a, ParticleNoise(5, 7, [0], "predict").normal(None, (4,)))


def test_normal_moments():
    """n = 400,000 normals: the mean has SE 1/sqrt(n), the variance sqrt(2/n), the fourth moment
    sqrt(96/n) (Var z^4 = 105 - 9); 5 SE each. Neighbouring particles are uncorrelated (SE 1/sqrt(n'))."""
    z = ParticleNoise(0, 1, range(2000), "init").normal(None, (200,))
    n = z.numel()
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96 / n)
    corr = (z[1:] * z[:-1]).mean()
    assert abs(corr) < 5 / math.sqrt(z[1:].numel())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stream_matches_cpu():
    cpu = ParticleNoise(3, 2, range(64), "propagate").normal(None, (33,))
    gpu = ParticleNoise(3, 2, range(64), "propagate", "cuda").normal(None, (33,))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-12)
