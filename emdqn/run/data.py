"""The LightningDataModule: a thin adapter that streams the collector's replay batches.

The RL loop itself (acting, env steps, replay adds, memory writes) is
:class:`emdqn.agent.collector.Collector`; this module only hands its batches to Lightning.
No DataLoader worker: the buffer must live in the training process.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytorch_lightning as pl
from torch.utils.data import IterableDataset

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

    def train_dataloader(self) -> ExperienceStream:
        # The stream itself, not a torch DataLoader around it: Lightning iterates any
        # iterable, and a DataLoader's per-batch fetch, collate and worker checks cost a
        # small network's step about 0.1 ms for nothing (batches are built here, in this
        # process). It also draws nothing from torch's global generator, which would put a
        # resumed run one draw ahead of an uninterrupted one.
        return ExperienceStream(self.collector)


class EarlyEnvStep(pl.Callback):
    """After each gradient step, let the collector send the next env step early (ale-py's
    vector env emulates it while Lightning finishes the step; see
    :meth:`Collector.start_next_step_early`)."""

    def __init__(self, collector: Collector):
        self.collector = collector

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.collector.start_next_step_early()
