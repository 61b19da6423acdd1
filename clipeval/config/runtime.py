"""Where and how fast to run: device, precision, batching, workers, sample limit, seed."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clipeval.config.schema import validate_runtime
from clipeval.errors import ClipevalError, did_you_mean

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 0
    limit: int | None = None
    seed: int = 0
    cache: bool = True
    progress: bool = True
    log_every: float = 30.0
    channels_last: bool = False
    compile: bool | str = False
    decode: str = "pil"
    chunk_size: int = 4096

    @classmethod
    def create(cls, **settings: Any) -> Runtime:
        """A runtime from ``runtime`` settings (the keys of conf/runtime/default.yaml; defaults as there).

        Every setting is checked against :class:`~clipeval.config.schema.RuntimeSettings` first:
        a wrong type, value or key is a ClipevalError naming it (exit 2), never a traceback or a
        silently different run (``cache: "no"`` is false; ``batch_size: 2.5`` is refused).
        """
        s = validate_runtime(settings)
        return cls(
            device=_resolve_device(s.device),
            precision=s.precision,
            batch_size=s.batch_size,
            workers=_resolve_workers(s.workers),
            limit=s.limit,
            seed=s.seed,
            cache=s.cache,
            progress=s.progress,
            log_every=s.log_every,
            channels_last=s.channels_last,
            compile=_check_compile(s.compile),
            decode=s.decode,
            chunk_size=s.chunk_size,
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def seed_everything(self) -> None:
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ClipevalError(f"runtime.device '{device}' is not a device torch knows ({exc}).") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ClipevalError(f"runtime.device={device} but CUDA is not available here. Use runtime.device=cpu or auto.")
    return resolved


def _resolve_workers(workers: int | str) -> int:
    if workers == "auto":
        return min(8, max(0, (os.cpu_count() or 1) - 1))
    return int(workers)


def _check_compile(compile: bool | str) -> bool | str:
    """``compile`` as given; a backend name must be one torch.compile knows (imports torch._dynamo, so only then)."""
    if isinstance(compile, bool) or compile == "inductor":
        return compile
    from torch._dynamo import list_backends

    backends = list_backends(exclude_tags=())
    if compile not in backends:
        raise ClipevalError(
            f"runtime.compile must be true, false or a torch.compile backend name, not '{compile}'. "
            + did_you_mean(compile, [b for b in backends if "TESTING" not in b])
        )
    return compile
