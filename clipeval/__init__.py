"""clipeval: zero-shot, few-shot and robustness evaluation of CLIP-style dual encoders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clipeval")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from clipeval.config.paths import register_resolvers  # noqa: E402

register_resolvers()
