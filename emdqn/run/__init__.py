"""A training run around Hydra and Lightning: build the parts, train, checkpoint, resume.

* :mod:`~emdqn.run.train`: ``train(cfg)``, what ``train.py`` runs;
* :mod:`~emdqn.run.module` and :mod:`~emdqn.run.data`: the LightningModule and DataModule adapters;
* :mod:`~emdqn.run.checkpoint` and :mod:`~emdqn.run.replay_files`: checkpoints with a manifest;
* :mod:`~emdqn.run.cli`: one-line errors and ``resume=`` around Hydra's entry point;
* :mod:`~emdqn.run.cluster`: SLURM (preemption, requeue);
* :mod:`~emdqn.run.loggers`: CSV and W&B.
"""
