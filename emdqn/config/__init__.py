"""The run's settings: typed schemas, the checks that run before any work, composing from Python.

* :mod:`~emdqn.config.schema`: the keys' types, registered in Hydra's ConfigStore;
* :mod:`~emdqn.config.checks`: one-line errors for bad values, the resolved loss weights, resume checks;
* :mod:`~emdqn.config.compose`: ``compose_config`` for notebooks and scripts;
* :mod:`~emdqn.config.choices`: the allowed values of the choice keys;
* :mod:`~emdqn.config.sweeps_path`: the repository's ``sweeps/`` as the ``+sweeps=`` group.
"""
