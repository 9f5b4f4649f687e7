"""Lightning: add the callback to `Trainer(callbacks=...)`; nothing else changes.

python examples/lightning_fit.py [--steps 60] [--out RUN]
"""

import lightning as L
import torch
from _common import arguments, digits
from lca_torch.lightning import LCACallback
from torch import nn


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
        self.loss_fn = nn.CrossEntropyLoss()  # the callback uses it on the evaluation set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


args = arguments(__doc__)
x, y, x_eval, y_eval = (torch.from_numpy(a) for a in digits())
torch.manual_seed(0)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
callback = LCACallback((x_eval, y_eval), args.out, progress=False)
trainer = L.Trainer(
    max_steps=args.steps,
    callbacks=[callback],
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(Classifier(), loader)
print(callback.summary())
