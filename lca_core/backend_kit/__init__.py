"""Backend support: what a framework backend builds on (:mod:`.base`), the evaluation sets
(:mod:`.evaluation_data`), finding backends through entry points (:mod:`.plugins`), and
the numpy backends the core tests itself with (:mod:`.function_backend`,
:mod:`.numpy_models`)."""
