"""The test app's inference tasks: classical models through MONAI Label's normal task path.

Each classical task sets a parameter-free network only so that MONAI Label lists it (``is_valid()``
is true whenever a network is set) and overrides ``run_inferer`` to compute its mask with
``expected.py`` on the loaded image: pre transforms, writer and geometry are the server's own.
"""

import os

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged, SqueezeDimd

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

import expected


class TinyNet(torch.nn.Module):
    """Three classes from one intensity channel: small enough to train for a few epochs in seconds on CPU."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


def _load():
    # No Orientationd/Spacingd: the mask stays on the input's own grid, so the writer restores it exactly.
    return [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image")]


def _image(data) -> np.ndarray:
    image = data["image"]
    array = image.array if hasattr(image, "array") else np.asarray(image)
    return np.asarray(array[0], dtype=np.float32)  # [i, j, k] after EnsureChannelFirstd


class _Classical(BasicInferTask):
    def __init__(self, type, labels, description):
        super().__init__(path=None, network=torch.nn.Identity(), type=type, labels=labels, dimension=3,
                         description=description)

    def pre_transforms(self, data=None):
        return _load()

    def post_transforms(self, data=None):
        return []

    def run_inferer(self, data, convert_to_batch=True, device="cuda"):
        # The writer takes the result's geometry from the result itself: carry the image's affine over.
        data["pred"] = MetaTensor(torch.from_numpy(self.mask(_image(data), data)), affine=data["image"].affine)
        return data


class SegThreshold(_Classical):
    def __init__(self):
        super().__init__(InferType.SEGMENTATION, dict(expected.SEG_LABELS), "Intensity thresholds (test model)")

    def mask(self, image, data):
        return expected.seg_threshold(image)


class DeepgrowThreshold(_Classical):
    def __init__(self):
        super().__init__(InferType.DEEPGROW, list(expected.DEEPGROW_LABELS), "Cubes around clicks (test model)")

    def mask(self, image, data):
        return expected.deepgrow(image, data.get("foreground"), data.get("background"))


class DeepEditThreshold(_Classical):
    def __init__(self):
        super().__init__(InferType.DEEPEDIT, dict(expected.DEEPEDIT_LABELS), "Cubes per label (test model)")

    def mask(self, image, data):
        return expected.deepedit(image, {name: data.get(name) for name in expected.DEEPEDIT_LABELS})


class SegTiny(BasicInferTask):
    """The network the ``seg_tiny`` trainer publishes; listed only once its weights exist."""

    def __init__(self, path):
        super().__init__(path=path, network=TinyNet(), type=InferType.SEGMENTATION, labels={"spleen": 1, "liver": 2},
                         dimension=3, description="Tiny trained network (test model)")

    def is_valid(self):
        return os.path.exists(self.path[0])

    def pre_transforms(self, data=None):
        return _load() + [ScaleIntensityRanged(keys="image", a_min=0, a_max=300, b_min=0.0, b_max=1.0, clip=True)]

    def post_transforms(self, data=None):
        return [AsDiscreted(keys="pred", argmax=True), SqueezeDimd(keys="pred", dim=0)]
