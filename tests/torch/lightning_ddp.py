"""A LightningModule importable by the processes Lightning's ddp_spawn starts."""

import lightning as L
import torch
from torch import nn

from tests.torch.test_distributed import _model


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = _model()
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self.loss_fn(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
