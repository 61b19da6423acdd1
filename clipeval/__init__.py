"""clipeval: zero-shot, few-shot and robustness evaluation of CLIP-style dual encoders."""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that wait for work spin only briefly (10,000 spins instead of libgomp's 300,000) before
# they sleep. Spinning threads burn the cores other processes need, and when one of a team is descheduled
# the rest spin until it returns. Measured here: sleeping at once (OMP_WAIT_POLICY=PASSIVE) helped under
# load but made the warm default job 32 s instead of 24 s on a quiet machine; 10,000 spins gave 25.6 s.
# Read when torch loads its OpenMP runtime, so it only counts when clipeval is imported first (as by
# `python -m clipeval`); an OMP_WAIT_POLICY or GOMP_SPINCOUNT of the user's is left alone.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

try:
    __version__ = version("clipeval")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from clipeval.config.paths import register_resolvers  # noqa: E402

register_resolvers()
