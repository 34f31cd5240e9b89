"""The method, free of Hydra and Lightning: the loop, the learner, the loss, the replay and the memory.

* :mod:`~emdqn.agent.collector`: the RL loop (act, step the envs, store, sample a batch per ``train_freq``);
* :mod:`~emdqn.agent.learner`: online and target networks, Adam, target sync, one update per batch;
* :mod:`~emdqn.agent.loss`: the batch type and the EMDQN loss (TD + lambda x memory term);
* :mod:`~emdqn.agent.replay`: the replay buffer (frames stored once, n-step windows);
* :mod:`~emdqn.agent.memory_feed`: the memory's seat in the loop (episodes, writes, lookups), or none;
* :mod:`~emdqn.agent.memory` and :mod:`~emdqn.agent.memory_index`: the episodic memory table (cKDTree);
* :mod:`~emdqn.agent.networks`, :mod:`~emdqn.agent.schedules`, :mod:`~emdqn.agent.cadence`,
  :mod:`~emdqn.agent.metrics`: the Q-networks, piecewise-linear schedules, every-N-steps clocks, progress lines.
"""
