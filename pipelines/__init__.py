"""Dask graphs that run gaittools operations over whole datasets."""
