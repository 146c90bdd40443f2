"""The `gaittools` subcommands that drive Dask pipelines; `gaittools.cli.main` loads them by name."""
