"""Where and how fast to run: device, precision, batching, workers, sample limit, seed."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from clipeval.errors import ClipevalError

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
    channels_last: bool = False
    compile: bool | str = False
    decode: str = "pil"
    chunk_size: int = 4096

    @classmethod
    def create(
        cls,
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int = 64,
        workers: int | str = "auto",
        limit: int | None = None,
        seed: int = 0,
        cache: bool = True,
        progress: bool = True,
        channels_last: bool = False,
        compile: bool | str = False,
        decode: str = "pil",
        chunk_size: int = 4096,
    ) -> Runtime:
        if precision not in PRECISIONS:
            raise ClipevalError(f"runtime.precision must be one of {sorted(PRECISIONS)}, not '{precision}'.")
        if batch_size < 1:
            raise ClipevalError(f"runtime.batch_size must be at least 1, not {batch_size}.")
        if chunk_size < 1:
            raise ClipevalError(f"runtime.chunk_size must be at least 1 image, not {chunk_size}.")
        if limit is not None and limit < 1:
            raise ClipevalError(f"runtime.limit must be a positive number of samples or null, not {limit}.")
        return cls(
            device=_resolve_device(device),
            precision=precision,
            batch_size=int(batch_size),
            workers=_resolve_workers(workers),
            limit=limit,
            seed=int(seed),
            cache=bool(cache),
            progress=bool(progress),
            channels_last=bool(channels_last),
            compile=compile if isinstance(compile, str) else bool(compile),
            decode=_check_decode(decode),
            chunk_size=int(chunk_size),
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
    if int(workers) < 0:
        raise ClipevalError(f"runtime.workers must be 0 or more, or 'auto', not {workers}.")
    return int(workers)


DECODERS = ("pil", "torchvision")


def _check_decode(decode: str) -> str:
    if decode not in DECODERS:
        raise ClipevalError(f"runtime.decode must be one of {list(DECODERS)}, not '{decode}'.")
    return decode
