"""Hugging Face `Trainer`: a tiny GPT-2 built from a config (no download) learns a pattern;
`lca_torch.hf.LCACallback` allocates each optimizer step of the model's own loss.

    python examples/hf_trainer_gpt2.py [--steps 30] [--out RUN]
"""

import tempfile

import numpy as np
import torch
from _common import arguments
from lca_torch.hf import LCACallback
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.trainer_utils import set_seed


def sequences(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each sequence counts up from a random start: a pattern a tiny model learns fast."""
    starts = np.random.default_rng(seed).integers(0, 32, n)
    ids = (starts[:, None] + np.arange(16)[None]) % 48
    return [{"input_ids": torch.tensor(r), "labels": torch.tensor(r)} for r in ids]


args = arguments(__doc__, steps=30)
set_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=48, n_positions=16, n_embd=32, n_layer=2, n_head=2))
callback = LCACallback(sequences(64, seed=1), args.out, progress=False)
trainer = Trainer(
    model=model,
    args=TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=16,
        max_steps=args.steps,
        learning_rate=3e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    ),
    train_dataset=sequences(512, seed=0),
    callbacks=[callback],
)
trainer.train()
print(callback.summary())
if torch.distributed.is_initialized():  # under torchrun: the Trainer's process group, closed
    torch.distributed.destroy_process_group()  # (left to exit, gloo's threads may abort)
