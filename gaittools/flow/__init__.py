"""TV-L1 optical flow: a batched PyTorch solver (CPU/CUDA) matching OpenCV's DualTVL1, the
OpenCV backend itself, Middlebury .flo files, colour coding, and flow cut to crop windows.
Imports nothing else of gaittools.

Importing this package does not import triton; the fused CUDA kernels load on first use.
"""

from gaittools.flow.colour import flow_to_color
from gaittools.flow.flo import FloError, endpoint_error, read_flo, write_flo
from gaittools.flow.opencv_backend import opencv_tvl1
from gaittools.flow.params import TVL1Params
from gaittools.flow.tvl1_torch import tvl1

__all__ = ["TVL1Params", "tvl1", "opencv_tvl1", "read_flo", "write_flo", "flow_to_color",
           "endpoint_error", "FloError"]
