"""What torchrun's gather costs: N simulated ranks on this machine, each holding its span of a dataset's chunks.

Each rank is a process in a gloo group (``file://`` rendezvous in a scratch folder) holding the features of
its span of the chunks (``images`` rows of ``dim`` float32 in chunks of 4,096, as
:func:`clipeval.features.encode._encode` keeps them). It times what a launch adds to a single process, with
the code a launch runs: :meth:`clipeval.distributed.World.gather` (``all_gather_object``: every rank
receives every chunk) and the merge into one feature set (``_feature_set``). The data are random; only
their size matters. The processes share this machine's cores, so the numbers show how the cost grows
with N, not what a network of GPUs would give.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

CHUNK = 4096


def _rank(rank: int, size: int, images: int, dim: int, repeats: int, scratch: str, rendezvous: str) -> None:
    import torch.distributed as dist

    from clipeval.distributed import World
    from clipeval.features.encode import _feature_set

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=size)
    world = World(rank, size, backend="gloo")
    ranges = [(start, min(start + CHUNK, images)) for start in range(0, images, CHUNK)]
    mine = world.span(len(ranges))
    generator = torch.Generator().manual_seed(rank)
    parts = {
        i: {
            "features": torch.nn.functional.normalize(torch.randn(stop - start, dim, generator=generator), dim=1),
            "labels": torch.arange(start, stop) % 1000,
            "ids": [str(j) for j in range(start, stop)],
            "skipped": [],
        }
        for i, (start, stop) in ((i, ranges[i]) for i in mine)
    }
    gathers, merges = [], []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        everything: dict[int, dict] = {}
        for share in world.gather(parts):
            everything.update(share)
        gathered = time.perf_counter()
        fs = _feature_set([everything[i] for i in range(len(ranges))], _Simulated())
        gathers.append(gathered - start)
        merges.append(time.perf_counter() - gathered)
        assert fs.features.shape == (images, dim)
    if rank == 0:
        result = {"gather": statistics.median(gathers), "merge": statistics.median(merges), "merged": len(fs)}
        Path(scratch, f"ranks_{size}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


class _Simulated:
    def describe(self) -> str:
        return "simulated features"


def gather_costs(sizes: tuple[int, ...], images: int, dim: int, scratch: Path, repeats: int = 3) -> list[dict]:
    """For each number of ranks: the median seconds of the gather and of the merge on rank 0, and how many features
    rank 0 held after the merge (``images``)."""
    import torch.multiprocessing as mp

    rows = []
    for size in sizes:
        rendezvous = Path(tempfile.mkdtemp(dir=scratch)) / "rendezvous"  # a file per group: never a stale one
        arguments = (size, images, dim, repeats, str(scratch), str(rendezvous))
        mp.start_processes(_rank, args=arguments, nprocs=size, start_method="spawn", join=True)
        result = json.loads((scratch / f"ranks_{size}.json").read_text())
        rows.append({"ranks": size, **result, "megabytes": images * dim * 4 / 2**20})
    return rows


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m clipeval.bench.ranks [images]
    with tempfile.TemporaryDirectory() as tmp:
        for row in gather_costs((1, 2, 4), int(sys.argv[1]) if len(sys.argv) > 1 else 50_000, 512, Path(tmp)):
            print(row)
