"""Environments: Atari (the original's frames), MinAtar, and the flat gymnasium tasks.

* :mod:`~emdqn.envs.make`: one wrapped env from ``cfg.env`` (and the list of those that train);
* :mod:`~emdqn.envs.vector`: ``env.num_envs`` envs stepped together;
* :mod:`~emdqn.envs.atari_scores`: random and human scores for human-normalized results.

``python -m emdqn.envs`` lists the environments this machine can train.
"""
