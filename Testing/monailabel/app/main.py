"""A MONAI Label app for ClaraAWS's tests: classical, deterministic models a test can recompute exactly.

The real ``monailabel`` server (installed from Testing/monailabel/requirements.txt into its own
virtualenv) loads this folder with ``--app``. Nothing here has weights to download, so the server
starts offline in seconds; every model's answer follows from the image and the clicks alone
(see ``expected.py``, which the tests use to compute what each model must return, without MONAI):

- ``seg_threshold`` (segmentation, labels as a dict): 1 "spleen" where 100 <= v < 200, 2 "liver" where v >= 200;
- ``deepgrow_threshold`` (deepgrow, labels as a list): cubes around the foreground clicks where v >= 100,
  minus smaller cubes around the background clicks, as 1;
- ``deepedit_threshold`` (deepedit, non-contiguous values): cubes around each label's clicks, in that
  label's value (liver is 6, as in MONAI's own DeepEdit apps), background clicks clear;
- ``seg_tiny``: a 1x1x1 convolution trained by the ``seg_tiny`` trainer on the datastore's final labels;
  it is listed only once training has published ``model/seg_tiny.pt``.

The server core does not import torchvision or MONAI Label's post transforms, and neither does this app.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

from models import DeepEditThreshold, DeepgrowThreshold, SegThreshold, SegTiny, TinyNet  # noqa: E402
from trainer import TinyTrainer  # noqa: E402

logger = logging.getLogger(__name__)


class TestApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.model_dir = os.path.join(app_dir, "model")
        os.makedirs(self.model_dir, exist_ok=True)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="ClaraAWS test app",
            description="Classical threshold and click models for ClaraAWS's tests",
        )

    def init_infers(self):
        return {
            "seg_threshold": SegThreshold(),
            "deepgrow_threshold": DeepgrowThreshold(),
            "deepedit_threshold": DeepEditThreshold(),
            "seg_tiny": SegTiny(os.path.join(self.model_dir, "seg_tiny.pt")),
        }

    def init_trainers(self):
        return {
            "seg_tiny": TinyTrainer(
                self.model_dir, TinyNet(), labels={"spleen": 1, "liver": 2},
                publish_path=os.path.join(self.model_dir, "seg_tiny.pt"),
                config={"max_epochs": 2, "val_split": 0.0},
            )
        }

    def init_strategies(self):
        return {"first": First(), "random": Random()}
