"""Peak resident memory of feature extraction at two dataset sizes, each in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clipeval.bench.fixtures import jpeg_folder

# Runs in a child process so that its peak resident set is its own.
_CHILD = """
import json, sys
from pathlib import Path
from clipeval.cache import TensorCache
from clipeval.features.encode import image_features
from clipeval.models.open_clip import OpenClipEncoder
from clipeval.config.paths import asset
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
model = OpenClipEncoder("tiny-digits-vit", pretrained=asset("tiny_digits.safetensors"),
                        model_config=asset("tiny-digits-vit.json"))
runtime = Runtime.create(device="cpu", batch_size=64, workers=0, cache=False, progress=False)
fs = image_features(model, ImageFolderSource(Path(sys.argv[1])), runtime, TensorCache(Path(sys.argv[1]), enabled=False))
status = Path("/proc/self/status").read_text()  # VmHWM: this process's peak, not its parent's before exec
peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps({"images": len(fs), "peak_mb": peak, "features_mb": fs.features.nbytes / 2**20}))
"""


def peak_memory(sizes: tuple[int, int], scratch: Path) -> list[dict[str, float]]:
    """Peak RSS for each size (Linux), decoding in the measured process itself (no workers).

    Decoded images (320x240 RGB, 0.23 MB each) would add up if they were held.
    """
    rows = []
    for count in sizes:
        folder = jpeg_folder(scratch / f"memory_{count}", count, size=(320, 240), seed=count)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(folder)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]) | {"held_images_mb": count * 320 * 240 * 3 / 2**20})
    return rows
