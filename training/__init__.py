"""train-copy: flow masters, gray students that copy them, evaluation and export.

Reads only the store and split tables; never imports ``pipelines``."""
