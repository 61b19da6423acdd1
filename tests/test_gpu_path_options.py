"""The GPU-path options (tensor decoding, channels_last, torch.compile) run here on the CPU.

Their speed shows only on a GPU; here they are checked to give the features of the default path.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_models import load_tiny

from clipeval.bench.fixtures import jpeg_folder
from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.data.tensor_decode import tensor_transform
from clipeval.errors import ClipevalError
from clipeval.features.encode import feature_key, image_encoder, image_features


def features(model, source, tmp_path, **runtime):
    rt = Runtime.create(device="cpu", batch_size=8, workers=0, progress=False, **runtime)
    return image_features(model, source, rt, TensorCache(tmp_path, enabled=False))


@pytest.fixture
def jpegs(tmp_path):
    return ImageFolderSource(jpeg_folder(tmp_path / "jpegs", 20, size=(120, 90)))


def test_torchvision_decoding_gives_nearly_the_pixels_and_features_of_pil(tiny_open_clip, jpegs, tmp_path):
    model = load_tiny(tiny_open_clip)
    ours = tensor_transform(model.preprocess)
    from torchvision.io import decode_jpeg

    for i in range(5):
        pil = jpegs.dataset(model.preprocess, None)[i].image
        tensor = ours(decode_jpeg(torch.frombuffer(bytearray(jpegs.read_bytes(i)), dtype=torch.uint8)))
        assert tensor.shape == pil.shape
        assert (tensor - pil).abs().mean() < 0.05  # normalised units: another decoder and resampler, not another image
    default, tv = features(model, jpegs, tmp_path), features(model, jpegs, tmp_path, decode="torchvision")
    assert tv.ids == default.ids and torch.equal(tv.labels, default.labels)
    assert (tv.features * default.features).sum(dim=1).min() > 0.99


def test_torchvision_decoding_reports_broken_and_reads_non_jpeg_files(tiny_open_clip, image_folder, tmp_path):
    (image_folder / "red_square" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"not a jpeg" * 10)
    (image_folder / "red_square" / "empty.jpg").write_bytes(b"")
    Image.open(next((image_folder / "red_square").glob("*.png"))).save(image_folder / "red_square" / "copy.bmp")
    fs = features(load_tiny(tiny_open_clip), ImageFolderSource(image_folder), tmp_path, decode="torchvision")
    assert len(fs) == 13  # the fixture's PNGs and the BMP decode on the CPU, with PIL
    assert sorted(sid for sid, _ in fs.skipped) == ["red_square/broken.jpg", "red_square/empty.jpg"]


def test_torchvision_decoding_is_cached_apart_and_refuses_what_it_cannot_do(tiny_open_clip, jpegs, tmp_path):
    model = load_tiny(tiny_open_clip)
    pil, tv = Runtime.create(device="cpu"), Runtime.create(device="cpu", decode="torchvision")
    assert feature_key(model, jpegs, pil) != feature_key(model, jpegs, tv)
    cropped = ImageFolderSource(jpegs.root, crop=2)
    with pytest.raises(ClipevalError, match="Use runtime.decode=pil"):
        features(model, cropped, tmp_path, decode="torchvision")
    with pytest.raises(ClipevalError, match="runtime.decode must be one of"):
        Runtime.create(decode="nvjpeg")


def test_channels_last_and_compile_give_the_same_features(tiny_open_clip, jpegs, tmp_path):
    model = load_tiny(tiny_open_clip)
    default = features(model, jpegs, tmp_path)
    nhwc = features(model, jpegs, tmp_path, channels_last=True)
    compiled = features(load_tiny(tiny_open_clip), jpegs, tmp_path, compile="eager")  # dynamo tracing, no codegen
    assert torch.allclose(nhwc.features, default.features, atol=1e-5)
    assert torch.allclose(compiled.features, default.features, atol=1e-5)
    cpu = Runtime.create(device="cpu", compile="eager")
    assert image_encoder(model, cpu) is image_encoder(model, cpu)  # compiled once per model and backend
    assert image_encoder(model, cpu) is not image_encoder(model, Runtime.create(device="cpu", compile="aot_eager"))


def test_images_of_one_size_are_transformed_as_a_batch_with_the_same_result(tiny_open_clip, tmp_path):
    """The torchvision path resizes each group of same-sized images in one call (on a GPU, a Python loop
    over images capped the path at about 800 images/s); the pixels are exactly those of one by one."""
    from torchvision.io import decode_jpeg

    from clipeval.data.tensor_decode import decode_batch

    model = load_tiny(tiny_open_clip)
    transform = tensor_transform(model.preprocess)
    wide = ImageFolderSource(jpeg_folder(tmp_path / "wide", 4, size=(120, 90)))
    tall = ImageFolderSource(jpeg_folder(tmp_path / "tall", 3, size=(70, 100), seed=1))
    data = [
        torch.frombuffer(bytearray(s.read_bytes(i)), dtype=torch.uint8) for s in (wide, tall) for i in range(len(s))
    ]
    data = [data[i] for i in (0, 4, 1, 5, 2, 6, 3)]  # sizes interleaved
    batch, kept, skipped = decode_batch(data, [str(i) for i in range(7)], transform, torch.device("cpu"))
    one_by_one = torch.stack([transform(decode_jpeg(d)) for d in data])
    assert kept == list(range(7)) and not skipped and torch.equal(batch, one_by_one)
