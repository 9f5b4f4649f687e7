"""The engine: how one step's loss change becomes allocations.

Pure pieces a caller composes (the :class:`~lca_core.allocator.Allocator` does): the
quadrature rules and the adaptive integral, the checked evaluator, a step's result, the
run's summary, the cost meter and the budget. Nothing here touches the store or a
framework.
"""
