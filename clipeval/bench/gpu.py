"""GPU throughput of the image side, and agreement of the GPU paths with the CPU.

``python -m clipeval.bench.gpu [--images 8192] [--batch 256] [--workers 15] [--json FILE]``

On generated ImageNet-sized JPEGs (500x375, :func:`~clipeval.bench.fixtures.jpeg_folder`) and a
random-weight open_clip model, it measures, for every combination of decode (``pil``: PIL in the
DataLoader workers; ``torchvision``: nvJPEG on the GPU), precision (fp32, bf16 autocast) and
``torch.compile`` (off, on):

- the bare forward pass on a batch already on the GPU (the ceiling), images/s;
- clipeval's end-to-end encoding (files .. unit features, :func:`~clipeval.features.encode.image_features`
  with the cache off), images/s, after a warm-up pass that also pays for compilation;
- how far each path's features are from fp32 features computed on the CPU with PIL decode, on the
  first ``--check`` images: the largest absolute difference of unit embeddings and the smallest cosine.

Rates are wall-clock over whole passes (the GPU synchronised); each is the median of ``--repeats`` passes.
Needs CUDA (``--device cpu`` runs the same passes on the CPU, as a check of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipeval.bench.fixtures import jpeg_folder, random_checkpoint
from clipeval.bench.throughput import input_size
from clipeval.cache import TensorCache
from clipeval.config.runtime import PRECISIONS, Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.features.encode import image_features
from clipeval.models.open_clip import OpenClipEncoder

COMBINATIONS = [
    (decode, precision, compile)
    for compile in (False, True)
    for precision in ("fp32", "bf16")
    for decode in ("pil", "torchvision")
]


def image_folder(folder: Path, images: int, distinct: int) -> Path:
    """``images`` JPEGs in the class folders: ``distinct`` generated ones, copied round to make up the count
    (decoding costs the same; generating is slow)."""
    jpeg_folder(folder, min(images, distinct))
    made = sorted(folder.rglob("*.jpg"))
    for i in range(len(made), images):
        original = made[i % len(made)]
        shutil.copyfile(original, original.parent / f"{i:06d}.jpg")
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(model: OpenClipEncoder, batch: int, precision: str, compile: bool, repeats: int) -> float:
    """Images/s of ``model.encode_image`` on a random batch already on the model's device."""
    side = input_size(model)
    x = torch.randn(batch, 3, side, side, device=model.device)
    fn = torch.compile(model.encode_image, dynamic=False) if compile else model.encode_image
    dtype = PRECISIONS[precision]
    rates = []
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        for _ in range(3):
            fn(x)
        for _ in range(repeats):
            _sync(x.device)
            start = time.perf_counter()
            for _ in range(20):
                fn(x)
            _sync(x.device)
            rates.append(20 * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def end_to_end(
    model: OpenClipEncoder, source: ImageFolderSource, runtime: Runtime, repeats: int, scratch: Path
) -> tuple[float, torch.Tensor]:
    """Images/s of clipeval's encoding (median of ``repeats`` passes after a warm-up) and the features."""
    cache = TensorCache(scratch, enabled=False)
    features = image_features(model, source, runtime, cache)  # warm-up; compiles when asked
    rates = []
    for _ in range(repeats):
        _sync(runtime.device)
        start = time.perf_counter()
        image_features(model, source, runtime, cache)
        _sync(runtime.device)
        rates.append(len(source) / (time.perf_counter() - start))
    return statistics.median(rates), features.features


def agreement(features: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Largest absolute difference and smallest cosine of unit embeddings, row by row."""
    a, b = features[: len(reference)].float(), reference.float()
    return {"max_abs_diff": float((a - b).abs().max()), "min_cosine": float((a * b).sum(1).min())}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clipeval.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--images", type=int, default=8192, help="JPEGs per end-to-end pass")
    parser.add_argument("--distinct", type=int, default=1024, help="of them generated (the rest are copies)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(15, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (median)")
    parser.add_argument("--check", type=int, default=256, help="images compared with CPU fp32 features")
    parser.add_argument("--only", default="", help="comma-separated decode/precision/compile labels to run")
    parser.add_argument("--device", default="cuda", help="cuda (the point), or cpu to check the script")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    return parser.parse_args(argv)


def measure(
    reference: OpenClipEncoder,
    model: OpenClipEncoder,
    source: ImageFolderSource,
    combinations: list[tuple[str, str, bool]],
    args: argparse.Namespace,
    scratch: Path,
) -> tuple[float, list[dict]]:
    """CPU fp32 images/s of ``reference`` on the first ``args.check`` images, and a row per combination:
    ``model`` (on ``args.device``) bare and end to end, and its features against the reference's."""
    limit = min(args.check, len(source))
    ref_runtime = Runtime.create(device="cpu", batch_size=64, workers=args.workers, limit=limit, progress=False)
    start = time.perf_counter()
    expected = image_features(reference, source, ref_runtime, TensorCache(scratch, enabled=False)).features
    cpu_rate = limit / (time.perf_counter() - start)
    rows = []
    for decode, precision, compile in combinations:
        label = _label(decode, precision, compile)
        runtime = Runtime.create(
            device=args.device,
            precision=precision,
            batch_size=args.batch,
            workers=args.workers,
            compile=compile,
            decode=decode,
            progress=False,
        )
        ceiling = bare_forward(model, args.batch, precision, compile, args.repeats)
        rate, features = end_to_end(model, source, runtime, args.repeats, scratch)
        row = {"path": label, "bare_forward": ceiling, "end_to_end": rate, "ratio": rate / ceiling}
        row |= agreement(features, expected)
        rows.append(row)
        print(
            f"{label:<28} bare {ceiling:9.0f}/s  end to end {rate:8.0f}/s  ratio {row['ratio']:.2f}  "
            f"vs CPU fp32: max |diff| {row['max_abs_diff']:.1e}, min cos {row['min_cosine']:.5f}",
            flush=True,
        )
    return cpu_rate, rows


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "clipeval.bench.gpu needs a CUDA device; none is available here (--device cpu checks it).", file=sys.stderr
        )
        raise SystemExit(2)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{args.arch}, random weights, on {gpu}; torch {torch.__version__}; {os.cpu_count()} CPU cores")
    print(f"{args.images} JPEGs 500x375 ({args.distinct} distinct), batch {args.batch}, {args.workers} workers\n")
    combinations = [c for c in COMBINATIONS if not args.only or _label(*c) in args.only.split(",")]
    result = {"gpu": gpu, "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        source = ImageFolderSource(image_folder(scratch / "images", args.images, args.distinct))
        checkpoint = str(random_checkpoint(args.arch, scratch))
        # one model for every path: each new model would make torch.compile compile again
        model = OpenClipEncoder(args.arch, pretrained=checkpoint)
        model.to(args.device)
        reference = OpenClipEncoder(args.arch, pretrained=checkpoint)
        result["cpu_fp32_images_per_s"], result["rows"] = measure(reference, model, source, combinations, args, scratch)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _label(decode: str, precision: str, compile: bool) -> str:
    return f"{decode}/{precision}/{'compile' if compile else 'eager'}"


if __name__ == "__main__":
    main()
