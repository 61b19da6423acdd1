"""Captioned images in the CLIP_benchmark webdataset retrieval layout, for the retrieval and benchmark tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from conftest import synthetic_image

#: images with 1 to 4 captions each (the Karpathy splits have 5 to 7): 9 images, 21 captions
COUNTS = [1, 3, 2, 4, 2, 1, 3, 2, 3]
WORDS = ["red", "green", "blue", "small", "large", "bright", "dark", "round", "square", "striped", "plain"]


def caption_set(counts=COUNTS) -> list[list[str]]:
    """Distinct captions, ``counts[i]`` of them for image i."""
    return [
        [f"a {WORDS[(i + j) % len(WORDS)]} {WORDS[(3 * i + 2 * j + 1) % len(WORDS)]} picture number {i} view {j}"
         for j in range(c)]
        for i, c in enumerate(counts)
    ]  # fmt: skip


def png(i: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(i % 3, i).save(buf, format="PNG")
    return buf.getvalue()


def write_wds(root: Path, captions: list[list[str]], shards: int = 2, txt=None) -> Path:
    """The CLIP_benchmark retrieval layout (webdataset_builder.convert_retrieval_dataset): <split>/{i}.tar with
    <key>.png + <key>.txt (captions joined by newlines), <split>/nshards.txt, dataset_type.txt = retrieval."""
    (root / "test").mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        with tarfile.open(root / "test" / f"{shard}.tar", "w") as tar:
            for i in range(shard, len(captions), shards):
                text = "\n".join(captions[i]) if txt is None else txt(i, captions[i])
                for ext, data in (("png", png(i)), ("txt", None if text is None else text.encode())):
                    if data is None:
                        continue
                    info = tarfile.TarInfo(f"s{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "dataset_type.txt").write_text("retrieval\n")
    return root
