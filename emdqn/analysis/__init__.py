"""Reading runs and comparing groups of them: statistics and tables.

* :mod:`~emdqn.analysis.aggregates`: bootstrap intervals, IQM and probability of improvement (rliable);
* :mod:`~emdqn.analysis.tables`: the markdown tables of ``python -m emdqn.compare``.
"""
