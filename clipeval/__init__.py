"""clipeval: zero-shot, few-shot and robustness evaluation of CLIP-style dual encoders."""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that wait for work sleep instead of spinning. With spinning (libgomp's default), a
# math library's threads burn the cores that other processes need, and when one of its own threads is
# descheduled, the rest spin until it comes back: on 2 shared cores the default job took minutes instead
# of seconds. Read when torch loads its OpenMP runtime, so it only counts when clipeval is imported first
# (as by `python -m clipeval`); set OMP_WAIT_POLICY=ACTIVE to keep spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("clipeval")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from clipeval.config.paths import register_resolvers  # noqa: E402

register_resolvers()
