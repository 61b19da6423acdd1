"""Command line of the benchmarks: ``python -m clipeval.bench [--sections ...] [--peer-python PY]``."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import clipeval.bench as bench
from clipeval.bench import memory, peer, precision, prompts, ranks, suite, throughput
from clipeval.bench.fixtures import imagenet_family, jpeg_folder, photo_folder, random_checkpoint
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.models.open_clip import OpenClipEncoder

SECTIONS = ("throughput", "precision", "suite", "prompts", "memory", "ranks", "peer")
WIDTH = 60
IMAGE_SOURCES = {"photos": "crops of real photographs", "generated": "generated wave-and-noise fields"}


def row(label: str, value: str) -> None:
    print(f"{label:<{WIDTH}} {value:>14}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clipeval.bench", description=bench.__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--images", type=int, default=300, help="images in the few-class folder (10 classes)")
    parser.add_argument(
        "--image-source",
        choices=("photos", "generated"),
        default="photos",
        help="the folder's JPEGs: crops of real photographs (scikit-learn's samples) or generated wave-and-noise",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", default="auto", help="dataloader workers (auto: as clipeval's runtime chooses)")
    parser.add_argument("--classes", type=int, default=10, help="ImageNet classes x 80 templates for the text pass")
    parser.add_argument("--peer-classes", type=int, default=20, help="ImageNet classes for the classifier build")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the peer's end-to-end runs")
    parser.add_argument("--suite", default="digits", help="suite whose encoding passes are counted")
    parser.add_argument(
        "--headline", action=argparse.BooleanOptionalAction, default=True, help="time task=imagenet_r with --arch"
    )
    parser.add_argument("--memory-sizes", default="500,2500", help="two dataset sizes for the peak-memory measurement")
    parser.add_argument("--ranks", default="1,2,4,8", help="numbers of simulated torchrun ranks for the gather cost")
    parser.add_argument("--rank-images", type=int, default=50_000, help="images (512-d features) the ranks gather")
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("CLIPEVAL_PEER_PYTHON"),
        help="Python of a virtual environment with clip-benchmark installed (or $CLIPEVAL_PEER_PYTHON)",
    )
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.workers = Runtime.create(device="cpu", workers=args.workers).workers
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    print(f"clipeval benchmarks: {args.arch} fp32 on cpu, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"batch {args.batch}, {args.workers} dataloader worker(s); models have random weights")
    print(f"image folder: {args.images} JPEGs, 500x375, {IMAGE_SOURCES[args.image_source]}\n")
    version = peer.peer_version(args.peer_python) if "peer" in args.sections else None
    if "peer" in args.sections and version is None:
        where = f"not importable with {args.peer_python}" if args.peer_python else "no --peer-python given"
        print(f"peer comparison skipped: clip_benchmark {where}. To run it: {peer.INSTALL_HINT}")
        args.sections.remove("peer")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if {"throughput", "peer"} & set(args.sections) or ("prompts" in args.sections and args.headline):
            checkpoint = random_checkpoint(args.arch, scratch)
            make = photo_folder if args.image_source == "photos" else jpeg_folder
            images = make(scratch / "images", args.images)
        if "throughput" in args.sections:
            model = OpenClipEncoder(args.arch, pretrained=str(checkpoint))
            show_throughput(args, model, ImageFolderSource(images), scratch)
            del model
        if "precision" in args.sections:
            show_precision(args, scratch)
        if "suite" in args.sections:
            show_suite(args, scratch)
        if "prompts" in args.sections:
            show_prompts(args, checkpoint if args.headline else None, scratch / "prompts")
        if "memory" in args.sections:
            show_memory(args, scratch)
        if "ranks" in args.sections:
            show_ranks(args, scratch)
        if "peer" in args.sections:
            try:
                show_peer(args, version, checkpoint, images, scratch)
            except RuntimeError as exc:  # a run of either tool failed: say which and why
                print(f"peer comparison failed: {exc}", file=sys.stderr)
                raise SystemExit(2) from None


def show_throughput(args, model: OpenClipEncoder, source: ImageFolderSource, scratch: Path) -> None:
    img = throughput.image_side(model, source, args.batch, args.workers, scratch)
    txt = throughput.text_side(model, args.classes)
    row(f"image forward, bare (ceiling), images/s (batch {args.batch})", f"{img['ceiling']:.1f}")
    row(f"image end to end ({len(source)} JPEGs decoded .. features), images/s", f"{img['end_to_end']:.1f}")
    row("  ratio to the ceiling", f"{img['end_to_end'] / img['ceiling']:.2f}")
    row("text, full 77-token context, prompts/s", f"{txt['full']:.1f}")
    row("text, trimmed context, prompts/s", f"{txt['trimmed']:.1f}")
    row(
        f"  speed-up ({txt['prompts']} prompts: 80 templates x {args.classes} classes)",
        f"{txt['trimmed'] / txt['full']:.1f}x",
    )
    row("  largest difference of unit embeddings", f"{txt['diff']:.1e}")


def show_precision(args, scratch: Path) -> None:
    model = OpenClipEncoder(args.arch, pretrained=str(random_checkpoint(args.arch, scratch)))
    rates = precision.forward_rates(model, args.batch)
    del model
    row(f"image forward fp32, images/s (batch {args.batch})", f"{rates['fp32']:.1f}")
    row("image forward bf16 autocast, images/s", f"{rates['bf16']:.1f}")
    row("  bf16 speed-up", f"{rates['bf16'] / rates['fp32']:.2f}x")
    for name, r in precision.digits_top1(scratch).items():
        row(f"  real digits '{name}' (n={r['n']}): top-1 fp32 / bf16", f"{r['fp32']:.4f} / {r['bf16']:.4f}")
        row("    predictions that differ", f"{r['changed']}")


def show_suite(args, scratch: Path) -> None:
    counts = suite.suite_passes([f"suite={args.suite}"], scratch)
    row(f"suite {args.suite}: feature reads by its tasks and evaluators", f"{counts['reads']}")
    row("  distinct datasets / image-encoding passes", f"{counts['datasets']} / {counts['passes']}")


def show_prompts(args, checkpoint: Path | None, scratch: Path) -> None:
    data = imagenet_family(scratch / "data", per_class=2)
    tiny = ["model=tiny_digits"]
    print("\nprompts encoded: ImageNet family, 80 templates, generated layout (R and A: 200 classes), tiny model;")
    print("ImageNet's 1,000 class names hold 998 distinct ones (two repeat), each encoded once: 79,840 prompts")
    row("  suite natural_shifts, one run, disk cache off", f"{prompts.suite_once(tiny, data, scratch / 'suite'):,}")
    runs = prompts.sequence(tiny, data, scratch / "sequence")
    print("  one run per task, the six runs sharing one cache folder:")
    for number, (task, count) in enumerate(runs, 1):
        row(f"    run {number}: task={task}", f"{count:,}")
    row("    the six runs together", f"{sum(c for _, c in runs):,}")
    if checkpoint is not None:
        model = ["model=open_clip", f"model.arch={args.arch}", f"model.pretrained={checkpoint}"]
        timed = prompts.headline(model, data, scratch / "headline")
        print(f"  task=imagenet_r, {args.arch}, 400 renditions + 22 val images, in-process (prompts / seconds):")
        for kind, what in (("cold", "empty cache"), ("warm", "rerun")):
            row(f"    {what}", f"{timed[kind]['prompts']:,} / {timed[kind]['seconds']:.1f} s")


def show_memory(args, scratch: Path) -> None:
    sizes = tuple(int(s) for s in args.memory_sizes.split(","))
    for r in memory.peak_memory(sizes, scratch):
        row(f"peak memory, {r['images']} images of 320x240 (tiny model, no workers)", f"{r['peak_mb']:.0f} MB")
        row("  features / all decoded images, were they held", f"{r['features_mb']:.1f} / {r['held_images_mb']:.0f} MB")


def show_ranks(args, scratch: Path) -> None:
    sizes = tuple(int(s) for s in args.ranks.split(","))
    rows = ranks.gather_costs(sizes, args.rank_images, 512, scratch)
    print(
        f"\ntorchrun's gather, simulated: {args.rank_images:,} features of 512 floats ({rows[0]['megabytes']:.0f} MB)"
    )
    print("in chunks of 4,096, each rank a process on this machine (gloo); rank 0's median of 3:")
    for r in rows:
        row(f"  {r['ranks']} rank(s): gather / merge, s", f"{r['gather']:.3f} / {r['merge']:.3f}")


def show_peer(args, version: str, checkpoint: Path, images: Path, scratch: Path) -> None:
    setup = peer.Setup(Path(args.peer_python), args.arch, checkpoint, images, args.batch, args.workers, scratch)
    print(f"\nCLIP_benchmark {version} side by side, same checkpoint file and image folder, fp32")
    runs = peer.end_to_end(setup, args.repeats)
    med = {k: statistics.median(v) for k, v in runs.items() if k.endswith(("cold", "warm"))}
    for kind in ("cold", "warm"):
        what = "empty cache" if kind == "cold" else "rerun; CLIP_benchmark loads its saved classifier"
        row(f"{kind} zero-shot, {args.images} images, 10 classes ({what})", "")
        row(f"  clipeval, s (median of {args.repeats})", f"{med[f'ours_{kind}']:.2f}")
        row(f"  CLIP_benchmark, s (median of {args.repeats})", f"{med[f'peer_{kind}']:.2f}")
        row("  clipeval faster by", f"{med[f'peer_{kind}'] / med[f'ours_{kind}']:.2f}x")
    ours, theirs = runs["scores_ours"], runs["scores_peer"]
    verdict = "same" if ours == theirs and len(ours) == 1 else "DIFFERENT"
    row("  top-1, mean per-class recall: clipeval / CLIP_benchmark", verdict)
    row(f"    {ours} / {theirs}", "")
    clf = peer.classifier_build(setup, args.peer_classes)
    row(f"classifier build, {args.peer_classes} ImageNet classes x 80 templates ({clf['prompts']} prompts)", "")
    row("  clipeval, s", f"{clf['ours']:.2f}")
    row("  CLIP_benchmark, s", f"{clf['peer']:.2f}")
    row("  clipeval faster by", f"{clf['peer'] / clf['ours']:.2f}x")
    row("  largest difference of the two classifiers", f"{clf['diff']:.1e}")


if __name__ == "__main__":
    main()
