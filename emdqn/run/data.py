"""The LightningDataModule: a thin adapter that streams the collector's replay batches.

The RL loop itself (acting, env steps, replay adds, memory writes) is
:class:`emdqn.agent.collector.Collector`; this module only hands its batches to Lightning.
``num_workers`` stays 0: the buffer must live in the training process.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from emdqn.agent.collector import Collector
from emdqn.agent.loss import Batch


class ExperienceStream(IterableDataset):
    """The batches of :meth:`Collector.batches`, played as they are asked for."""

    def __init__(self, collector: Collector):
        super().__init__()
        self.collector = collector

    def __iter__(self) -> Iterator[Batch]:
        return self.collector.batches()


class EMDQNDataModule(pl.LightningDataModule):
    """Wraps the collector (and through it the replay buffer) for the Trainer."""

    def __init__(self, collector: Collector):
        super().__init__()
        self.collector = collector

    def train_dataloader(self) -> DataLoader:
        # A generator of its own: a DataLoader draws its base seed when iterated, and from
        # torch's global generator that draw would put a resumed run one draw ahead of an
        # uninterrupted one.
        return DataLoader(ExperienceStream(self.collector), batch_size=None, num_workers=0,
                          collate_fn=lambda batch: batch, generator=torch.Generator().manual_seed(0))


class EarlyEnvStep(pl.Callback):
    """After each gradient step, let the collector send the next env step early (ale-py's
    vector env emulates it while Lightning finishes the step; see
    :meth:`Collector.start_next_step_early`)."""

    def __init__(self, collector: Collector):
        self.collector = collector

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.collector.start_next_step_early()
