"""ImageNet validation and ObjectNet, shared by several ImageNet-family tasks.

Both are image folders with a known layout; what they add is where to look under the data
root, what to say when the data is absent, and (ObjectNet) the official mapping of its
classes onto ImageNet's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clipeval.data.base import DataNotFound
from clipeval.data.folder import ImageFolderSource
from clipeval.errors import ClipevalError
from clipeval.results.files import read_json, read_text

log = logging.getLogger(__name__)

IMAGENET_VAL_DIRS = ("imagenet/val", "ILSVRC2012/val", "imagenet-1k/val", "ILSVRC/Data/CLS-LOC/val")
IMAGENET_HOW = (
    "ImageNet-1k (ILSVRC 2012) validation: 50,000 images in one folder per class, named by wnid "
    "(<data root>/imagenet/val/n01440764/...). Download it from https://image-net.org after accepting its "
    "terms of access (non-commercial research and education), then sort the flat val images into wnid "
    "folders (for example with the valprep.sh script that PyTorch's ImageNet example points to). "
    "Set the data root with CLIPEVAL_DATA=DIR or data_root=DIR."
)

OBJECTNET_DIRS = ("objectnet-1.0", "objectnet")
OBJECTNET_HOW = (
    "ObjectNet 1.0 (Barbu et al. 2019): download it from https://objectnet.dev/download.html after agreeing "
    "to its licence (evaluation only: no training, no redistribution) and extract it so that "
    "<data root>/objectnet-1.0/images/<class>/ and <data root>/objectnet-1.0/mappings/*.json exist. "
    "Set the data root with CLIPEVAL_DATA=DIR or data_root=DIR."
)


class ImageNetVal(ImageFolderSource):
    def __init__(self, data_root: str, wnids: str):
        super().__init__(
            [os.path.join(data_root, d) for d in IMAGENET_VAL_DIRS],
            classes=wnids,
            what="ImageNet validation (50,000 images in 1,000 wnid folders)",
            how_to_get=IMAGENET_HOW,
        )


class ObjectNet(ImageFolderSource):
    """ObjectNet's 113 classes that overlap ImageNet, through the dataset's own mapping files.

    ``mappings/objectnet_to_imagenet_1k.json`` names, for each ObjectNet class, the ImageNet
    classes it covers; those names index ``imagenet_to_label_2012_v2`` (line i is ImageNet
    2012 id i), and ``pytorch_to_imagenet_2012_id.json`` maps the usual class index (sorted
    wnids) to that id. ``class_groups[k]`` lists the ImageNet class indices of ObjectNet class
    k: a prediction over ImageNet's 1,000 classes becomes an ObjectNet prediction by taking,
    for each ObjectNet class, the largest logit among its ImageNet classes (as in the
    CLIP paper's and CLIP_benchmark's ObjectNet evaluation). Images keep only the 113 classes'
    folders and lose their 2-pixel red border before the model's transform.
    """

    BORDER = 2

    def __init__(self, data_root: str):
        candidates = [Path(data_root, d).expanduser().resolve() for d in OBJECTNET_DIRS]
        root = next((c for c in candidates if (c / "images").is_dir() and (c / "mappings").is_dir()), None)
        if root is None:
            raise DataNotFound(
                "ObjectNet 1.0 (images/ and mappings/)", [str(c) for c in candidates], OBJECTNET_HOW, kind="folder"
            )
        folders, groups, names = _objectnet_mapping(root / "mappings")
        super().__init__(
            root / "images",
            classes=folders,
            other_folders="ignore",
            crop=self.BORDER,
            what="ObjectNet images",
            how_to_get=OBJECTNET_HOW,
        )
        self.class_groups = groups
        self.classnames = names


def _objectnet_mapping(mappings: Path) -> tuple[list[str], list[list[int]], list[str]]:
    """(folder per class, ImageNet indices per class, ObjectNet name per class), classes in folder order."""

    def load(name: str):
        path = mappings / name
        if not path.is_file():
            raise DataNotFound(f"ObjectNet mapping file {name}", [str(path)], OBJECTNET_HOW, partial=True)
        if name.endswith(".json"):
            return read_json(path, "ObjectNet mapping file")[1]
        return read_text(path, "ObjectNet mapping file")[1].splitlines()

    folder_of = {label: folder for folder, label in load("folder_to_objectnet_label.json").items()}
    to_imagenet = load("objectnet_to_imagenet_1k.json")
    id_to_index = {
        int(imagenet_id): int(index) for index, imagenet_id in load("pytorch_to_imagenet_2012_id.json").items()
    }
    index_of_label = {
        line.strip(): id_to_index[i] for i, line in enumerate(load("imagenet_to_label_2012_v2")) if line.strip()
    }
    classes = []
    for label, imagenet_labels in to_imagenet.items():
        try:
            indices = sorted(index_of_label[name] for name in imagenet_labels.split("; "))
        except KeyError as exc:
            raise ClipevalError(
                f"ObjectNet mapping names ImageNet class {exc} that imagenet_to_label_2012_v2 lacks."
            ) from None
        classes.append((folder_of[label], indices, label.lower()))
    classes.sort()
    return [c[0] for c in classes], [c[1] for c in classes], [c[2] for c in classes]
