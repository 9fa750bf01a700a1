"""The test app's trainer: a 1x1x1 convolution on the datastore's final labels, seconds per run on CPU."""

import torch
from monai.handlers import StatsHandler, from_engine
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    ScaleIntensityRanged,
    SelectItemsd,
    ToTensord,
)

from monailabel.tasks.train.basic_train import BasicTrainTask


class TinyTrainer(BasicTrainTask):
    def __init__(self, model_dir, network, **kwargs):
        self._network = network
        super().__init__(model_dir, "Train the tiny test network", amp=False, **kwargs)

    def network(self, context):
        return self._network

    def optimizer(self, context):
        return torch.optim.Adam(context.network.parameters(), lr=0.05)

    def loss_function(self, context):
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def train_pre_transforms(self, context):
        return [
            LoadImaged(keys=("image", "label")),
            EnsureChannelFirstd(keys=("image", "label")),
            EnsureTyped(keys=("image", "label")),
            ScaleIntensityRanged(keys="image", a_min=0, a_max=300, b_min=0.0, b_max=1.0, clip=True),
            SelectItemsd(keys=("image", "label")),
        ]

    def train_post_transforms(self, context):
        return [
            ToTensord(keys=("pred", "label")),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=3),
        ]

    def val_pre_transforms(self, context):
        return self.train_pre_transforms(context)

    def val_inferer(self, context):
        return SimpleInferer()

    # The base class adds TensorBoard handlers; tensorboard is left out of the pinned server venv.
    def train_handlers(self, context):
        return [StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True))]

    def val_handlers(self, context):
        return [StatsHandler(output_transform=lambda x: None, iteration_log=False)]
