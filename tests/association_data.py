"""A tiny WinoGAViL in its hub repository's layout: ``winogavil_dataset.csv`` and the candidate images as
``winogavil_images/<name>.jpg``, unpacked or in ``winogavil_images.zip``."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from conftest import synthetic_image

#: (number of candidates, number of associations) of each generated instance: WinoGAViL's four sizes, three each
SHAPES = [(5, 2), (5, 3), (6, 2), (6, 3), (10, 3), (10, 4), (12, 4), (12, 5), (5, 2), (6, 2), (10, 2), (12, 3)]
CUES = ["apple", "Ocean", "tree", "umbrella", "sky", "Iron", "moon", "engine", "river", "Dog", "oak", "fire"]
POOL = 30  # distinct images the instances draw their candidates from


def make_instances(shapes=SHAPES, seed: int = 0) -> list[dict]:
    """Instances as the CSV holds them: ID, cue, candidates and associations (lists of image names)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (m, k) in enumerate(shapes):
        candidates = [f"img{j:03d}" for j in rng.choice(POOL, m, replace=False)]
        associations = [candidates[j] for j in sorted(rng.choice(m, k, replace=False))]
        out.append({"ID": 100 + i, "cue": CUES[i % len(CUES)], "candidates": candidates, "associations": associations})
    return out


def image_of(name: str) -> bytes:
    """The JPEG bytes of image ``name`` (``img<j>``): a synthetic image of 'class' j % 3, index j."""
    j = int(name[3:])
    buf = io.BytesIO()
    synthetic_image(j % 3, j, size=48).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_winogavil(root: Path, instances: list[dict] | None = None, zipped: bool = False) -> Path:
    """Write the CSV (with num_candidates and num_associations, as the hub's has) and every candidate image."""
    instances = make_instances() if instances is None else instances
    root.mkdir(parents=True, exist_ok=True)
    with (root / "winogavil_dataset.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["candidates", "cue", "associations", "num_associations", "num_candidates", "ID"])
        for inst in instances:
            writer.writerow([json.dumps(inst["candidates"]), inst["cue"], json.dumps(inst["associations"]),
                             len(inst["associations"]), len(inst["candidates"]), inst["ID"]])  # fmt: skip
    names = sorted({n for inst in instances for n in inst["candidates"]})
    if zipped:
        with zipfile.ZipFile(root / "winogavil_images.zip", "w") as archive:
            for name in names:
                archive.writestr(f"winogavil_images/{name}.jpg", image_of(name))
    else:
        (root / "winogavil_images").mkdir(exist_ok=True)
        for name in names:
            (root / "winogavil_images" / f"{name}.jpg").write_bytes(image_of(name))
    return root
