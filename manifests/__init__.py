"""Protocol definitions shipped as data, read by build-split and evaluation."""
