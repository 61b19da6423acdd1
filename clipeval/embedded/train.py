"""Train the embedded suite's tiny CLIP on the digits' train split.

    python -m clipeval.embedded.train [--steps 1500] [--out clipeval/embedded/assets/tiny_digits.safetensors]

Contrastive pre-training as in the CLIP paper: a batch of (image, caption) pairs, cosine
similarities scaled by a learned temperature, and the symmetric cross-entropy over rows
and columns. Captions vary ("a handwritten 7", "the number seven written by hand", ...)
and never use the zero-shot prompts of the tasks, so evaluation is zero-shot in the
paper's sense. The run is deterministic (fixed seed, one thread, deterministic kernels).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipeval.atomic import atomic_write
from clipeval.embedded import digits

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
ARCH = "tiny-digits-vit"
ARCH_CONFIG = ASSETS / f"{ARCH}.json"
CHECKPOINT = ASSETS / "tiny_digits.safetensors"

# {n}: the numeral, {w}: the word. None of these frames is a prompt of the digit tasks.
CAPTIONS = [
    "a handwritten {n}",
    "a handwritten {w}",
    "a scan of the digit {w}",
    "the number {w} written by hand",
    "a scanned {n}",
    "the numeral {n}",
    "handwriting: {w}",
    "{w}, written with a pen",
    "a small {n} in ink",
    "digit {n}",
    "a {w} drawn by a person",
    "an old scan showing a {w}",
    "{n}",
    "{w}",
]


def captions_for(label: int, rng: np.random.Generator) -> str:
    template = CAPTIONS[rng.integers(len(CAPTIONS))]
    return template.format(n=label, w=digits.CLASSNAMES[label])


def create(seed: int):
    import open_clip

    open_clip.add_model_config(str(ARCH_CONFIG))
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    return model, preprocess, open_clip.get_tokenizer(ARCH)


def train(steps: int = 1500, batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> torch.nn.Module:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model, preprocess, tokenizer = create(seed)
    x, y = digits.splits()["train"]
    images = torch.stack([preprocess(digits.to_pil(im)) for im in x])  # the eval transform, once
    rng = np.random.default_rng(seed)
    params_decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    params_rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": params_decay, "weight_decay": 0.1},
            {"params": params_rest, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    warmup = steps // 20
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))),
    )
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(len(y), size=batch_size, replace=False)
        tokens = tokenizer([captions_for(int(y[i]), rng) for i in idx])
        img = F.normalize(model.encode_image(images[idx]), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        target = torch.arange(batch_size)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "step %d/%d  loss %.3f  scale %.1f  (%.0f s)",
                step,
                steps,
                loss.item(),
                model.logit_scale.exp().item(),
                time.perf_counter() - start,
            )
    return model.eval()


def save(model: torch.nn.Module, path: Path) -> str:
    """Half-precision safetensors (small enough to commit); returns its sha256."""
    from safetensors.torch import save

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    data = save(state)  # no metadata: safetensors writes a metadata dict in no fixed order
    atomic_write(path, lambda f: f.write(data))
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path.with_suffix(".sha256"), lambda f: f.write(f"{digest}  {path.name}\n".encode()))
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = train(args.steps, args.batch_size, args.lr, args.seed)
    digest = save(model, args.out)
    log.info("wrote %s (%.1f MB, sha256 %s)", args.out, args.out.stat().st_size / 1e6, digest)


if __name__ == "__main__":
    main()
