"""gaittools: raw gait videos -> person-cropped gray clips and TV-L1 flow in a Zarr store.

The library behind the ``gaittools`` command. It never imports the ``training`` package, so
preprocessing machines need no training stack.
"""

__version__ = "0.1.0"
