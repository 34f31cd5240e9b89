"""Reading runs and comparing groups of them: run folders, statistics, tables, result records.

* :mod:`~emdqn.analysis.runs`: the one reader of run folders (metrics, config, binned learning curve);
* :mod:`~emdqn.analysis.aggregates`: bootstrap intervals, IQM and probability of improvement (rliable);
* :mod:`~emdqn.analysis.tables`: the markdown tables of ``python -m emdqn.compare``;
* :mod:`~emdqn.analysis.records`: result records (command, commit, machine, versions) for ``benchmarks/``;
* :mod:`~emdqn.analysis.script_support`: what the ``benchmarks/`` scripts share.
"""
