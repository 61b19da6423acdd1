"""``python -m clipeval.bench`` (or ``nox -s bench``): throughput of the hot paths on this machine.

Prints a table: the image tower's bare forward (the ceiling), end-to-end feature extraction
(decode, preprocess, forward, write) and their ratio; the text tower on the full 77-token
context and on the trimmed one for the 80 ImageNet templates, with their largest difference.
Models are randomly initialised (no download): throughput does not depend on the weights.
A benchmark, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipeval.cache import TensorCache
from clipeval.features import image_features
from clipeval.models.base import normalize
from clipeval.models.open_clip import OpenClipEncoder, encode_text_trimmed
from clipeval.paths import builtin_tasks_dir
from clipeval.runtime import Runtime
from clipeval.sources.folder import ImageFolderSource


def _random_model(arch: str, folder: Path) -> OpenClipEncoder:
    import open_clip

    torch.manual_seed(0)
    path = folder / f"{arch}.pt"
    torch.save(open_clip.create_model(arch).state_dict(), path)
    return OpenClipEncoder(arch, pretrained=str(path))


def _images(folder: Path, count: int, classes: int = 4) -> ImageFolderSource:
    rng = np.random.default_rng(0)
    for i in range(count):
        (folder / f"c{i % classes}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"c{i % classes}" / f"{i:05d}.jpg", quality=90)
    return ImageFolderSource(folder)


def _rate(fn, items: int, repeats: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return items * repeats / (time.perf_counter() - start)


def image_side(model: OpenClipEncoder, source: ImageFolderSource, batch: int, workers: int) -> dict[str, float]:
    size = model.preprocess.transforms[0].size
    size = size if isinstance(size, int) else size[0]
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        ceiling = _rate(lambda: model.encode_image(x), batch, repeats=3)
    runtime = Runtime.create(device="cpu", batch_size=batch, workers=workers, cache=False, progress=False)
    cache = TensorCache(Path(tempfile.mkdtemp()), enabled=False)
    start = time.perf_counter()
    image_features(model, source, runtime, cache)
    end_to_end = len(source) / (time.perf_counter() - start)
    return {"ceiling": ceiling, "end_to_end": end_to_end}


def text_side(model: OpenClipEncoder, classes: int) -> dict[str, float]:
    tasks = builtin_tasks_dir()
    templates = (tasks / "imagenet" / "templates.txt").read_text().splitlines()
    names = (tasks / "imagenet" / "classnames.txt").read_text().splitlines()[:classes]
    tokens = model.tokenize([t.replace("{c}", n) for n in names for t in templates])
    with torch.inference_mode():
        full = _rate(lambda: model.model.encode_text(tokens), len(tokens))
        trimmed = _rate(lambda: encode_text_trimmed(model.model, tokens), len(tokens))
        diff = float(
            (normalize(model.model.encode_text(tokens)) - normalize(encode_text_trimmed(model.model, tokens)))
            .abs()
            .max()
        )
    return {"full": full, "trimmed": trimmed, "diff": diff, "prompts": len(tokens)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipeval.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--classes", type=int, default=10, help="ImageNet classes for the text benchmark (x 80 templates)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = _random_model(args.arch, Path(tmp))
        source = _images(Path(tmp) / "images", args.images)
        img = image_side(model, source, args.batch, args.workers)
        txt = text_side(model, args.classes)
    print(f"clipeval throughput, {args.arch} fp32, {torch.get_num_threads()} threads, device cpu")
    print(f"{'measure':<52} {'value':>12}")
    print(f"{'image forward, bare (ceiling), images/s':<52} {img['ceiling']:>12.1f}")
    print(f"{'image end to end (JPEG decode .. features), images/s':<52} {img['end_to_end']:>12.1f}")
    print(f"{'  ratio to the ceiling':<52} {img['end_to_end'] / img['ceiling']:>12.2f}")
    print(f"{'text, full 77-token context, prompts/s':<52} {txt['full']:>12.1f}")
    print(f"{'text, trimmed context, prompts/s':<52} {txt['trimmed']:>12.1f}")
    print(
        f"{'  speed-up ({} prompts: 80 templates x {} classes)'.format(txt['prompts'], args.classes):<52} {txt['trimmed'] / txt['full']:>12.1f}"
    )
    print(f"{'  largest difference of unit embeddings':<52} {txt['diff']:>12.2e}")
    try:
        import clip_benchmark  # noqa: F401
    except ImportError:
        print(
            "peer comparison: clip_benchmark is not installed here (pip install clip-benchmark in its own venv); skipped"
        )


if __name__ == "__main__":
    main()
