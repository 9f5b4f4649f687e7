"""The run store: one writer per run (the lock), the zarr format, what a reader verifies,
the read API (:func:`~lca_core.storage.run.open_run`), the recorder that writes a run and
the files lca writes beside runs."""
