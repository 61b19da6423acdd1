"""CLIP_benchmark side by side: same checkpoint file, same image folder, same precision (fp32).

CLIP_benchmark lives in its own virtual environment (it pins numpy below 2.4 and needs
``requests``); it is driven through its own command line and functions, in subprocesses
of that environment's Python. Three comparisons:

- cold: a zero-shot run on a few-class image folder from an empty cache, end to end
  (process start to exit), both tools at the same batch size and number of workers;
- classifier: building the text classifier of many classes with the 80 ImageNet
  templates, model already loaded (the classifiers are compared element by element);
- warm: the same run again. clipeval reuses its feature and classifier cache;
  CLIP_benchmark has no feature cache for zero-shot, so its rerun loads the classifier it
  saved (``--load_clfs``) and encodes the images again.

CLIP_benchmark knows datasets by name; a local image folder goes through its
``imagenet_sketch`` loader (a torchvision ImageFolder on ``--dataset_root``) with our class
names and template passed as its custom class-name and template files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from clipeval.bench.fixtures import CLASSNAMES
from clipeval.bench.throughput import imagenet_prompts
from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.features.classifier import zeroshot_classifier
from clipeval.models.open_clip import OpenClipEncoder

PEER_DATASET = "imagenet_sketch"  # CLIP_benchmark's plain ImageFolder loader
TEMPLATE = "a photo of a {c}."
INSTALL_HINT = (
    "python -m venv peer && peer/bin/pip install clip-benchmark==1.6.2 'numpy<2.4' requests, "
    "then: python -m clipeval.bench --peer-python peer/bin/python"
)

# Runs in the peer's environment: its own zero_shot_classifier on its own open_clip model.
_PEER_CLASSIFIER = """
import json, sys, time, torch, open_clip
from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier
arch, checkpoint, prompts_file, out = sys.argv[1:]
names, templates = json.load(open(prompts_file))
model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=checkpoint)
model.eval()
tokenizer = open_clip.get_tokenizer(arch)
zero_shot_classifier(model, tokenizer, names[:1], templates, "cpu", amp=False)  # warm-up, as on our side
start = time.perf_counter()
weights = zero_shot_classifier(model, tokenizer, names, templates, "cpu", amp=False)
seconds = time.perf_counter() - start
torch.save(weights.T.contiguous(), out)
print(json.dumps({"seconds": seconds}))
"""


def peer_version(python: str | None) -> str | None:
    """CLIP_benchmark's version in the environment of ``python``, or None when it is not there."""
    if not python:
        return None
    probe = "import importlib.metadata as m, clip_benchmark; print(m.version('clip_benchmark'))"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@dataclass
class Setup:
    peer_python: Path
    arch: str
    checkpoint: Path
    images: Path
    batch: int
    workers: int
    scratch: Path

    def __post_init__(self):
        self.classnames_file = self.scratch / "peer_classnames.json"
        self.templates_file = self.scratch / "peer_templates.json"
        self.classnames_file.write_text(json.dumps({PEER_DATASET: CLASSNAMES}))
        self.templates_file.write_text(json.dumps({PEER_DATASET: [TEMPLATE]}))


def _timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def ours(setup: Setup, cache: Path, run_dir: Path) -> tuple[float, tuple[float, float]]:
    """Seconds end to end, top-1 and mean per-class recall of ``python -m clipeval task=folder``."""
    argv = [
        sys.executable,
        "-m",
        "clipeval",
        "task=folder",
        f"task.root={setup.images}",
        f"task.templates=['{TEMPLATE}']",
        "model=open_clip",
        f"model.arch={setup.arch}",
        f"model.pretrained={setup.checkpoint}",
        f"runtime.batch_size={setup.batch}",
        f"runtime.workers={setup.workers}",
        "runtime.precision=fp32",
        "runtime.progress=false",
        f"cache_dir={cache}",
        f"store={setup.scratch / 'store'}",
        f"hydra.run.dir={run_dir}",
    ]
    seconds = _timed(argv)
    values = {r["metric"]: r["value"] for r in json.loads((run_dir / "results.json").read_text())["records"]}
    return seconds, (round(values["top1"], 10), round(values["mean_per_class_recall"], 10))


def peer(setup: Setup, out: Path, classifier: Path, load: bool) -> tuple[float, tuple[float, float]]:
    """Seconds end to end, top-1 and mean per-class recall of ``clip_benchmark eval``."""
    argv = [
        str(setup.peer_python),
        "-c",
        "import sys; from clip_benchmark.cli import main; sys.exit(main())",
        "eval",
        "--dataset",
        PEER_DATASET,
        "--dataset_root",
        str(setup.images),
        "--model",
        setup.arch,
        "--pretrained",
        str(setup.checkpoint),
        "--no_amp",
        "--batch_size",
        str(setup.batch),
        "--num_workers",
        str(setup.workers),
        "--custom_classname_file",
        str(setup.classnames_file),
        "--custom_template_file",
        str(setup.templates_file),
        "--output",
        str(out),
        *(["--load_clfs", str(classifier)] if load else ["--save_clf", str(classifier)]),
    ]
    seconds = _timed(argv, env=os.environ | {"TQDM_DISABLE": "1"})
    metrics = json.loads(out.read_text())["metrics"]
    return seconds, (round(metrics["acc1"], 10), round(metrics["mean_per_class_recall"], 10))


def end_to_end(setup: Setup, repeats: int) -> dict[str, list[float]]:
    """Cold and warm runs of both tools, interleaved so that drifts of a shared machine hit both alike."""
    times: dict[str, list[float]] = {"ours_cold": [], "ours_warm": [], "peer_cold": [], "peer_warm": []}
    scores: dict[str, set[tuple[float, float]]] = {"ours": set(), "peer": set()}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=setup.scratch) as tmp:
            tmp = Path(tmp)
            for kind in ("cold", "warm"):
                seconds, score = ours(setup, tmp / "cache", tmp / f"ours_{kind}")
                times[f"ours_{kind}"].append(seconds)
                scores["ours"].add(score)
                seconds, score = peer(setup, tmp / f"peer_{kind}.json", tmp / "peer_clf.pt", load=kind == "warm")
                times[f"peer_{kind}"].append(seconds)
                scores["peer"].add(score)
    return {**times, "scores_ours": sorted(scores["ours"]), "scores_peer": sorted(scores["peer"])}


def classifier_build(setup: Setup, classes: int) -> dict[str, float]:
    """Seconds to build the classifier of ``classes`` ImageNet classes x 80 templates, model loaded."""
    names, templates = imagenet_prompts(classes)
    prompts_file, peer_out = setup.scratch / "peer_prompts.json", setup.scratch / "peer_classifier.pt"
    prompts_file.write_text(json.dumps([names, templates]))
    done = subprocess.run(
        [
            str(setup.peer_python),
            "-c",
            _PEER_CLASSIFIER,
            setup.arch,
            str(setup.checkpoint),
            str(prompts_file),
            str(peer_out),
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"TQDM_DISABLE": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"CLIP_benchmark's zero_shot_classifier failed:\n{done.stderr[-3000:]}")
    peer_seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    model = OpenClipEncoder(setup.arch, pretrained=str(setup.checkpoint))
    runtime = Runtime.create(device="cpu", batch_size=setup.batch, cache=False, progress=False)
    no_cache = TensorCache(setup.scratch, enabled=False)
    zeroshot_classifier(model, names[:1], templates, runtime, no_cache)  # warm-up (and the trim check)
    start = time.perf_counter()
    weights = zeroshot_classifier(model, names, templates, runtime, no_cache)
    ours_seconds = time.perf_counter() - start
    diff = float((weights - torch.load(peer_out, weights_only=True)).abs().max())
    return {"ours": ours_seconds, "peer": peer_seconds, "prompts": len(names) * len(templates), "diff": diff}
