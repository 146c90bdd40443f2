"""The `gaittools` subcommands that drive Dask pipelines; `gaittools.cli` loads them by name."""
