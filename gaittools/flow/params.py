"""TV-L1 parameters, with OpenCV's DualTVL1OpticalFlow defaults.

One dataclass serves both backends so that a flow computed with ``--backend torch`` and one
computed with ``--backend opencv`` can be compared knowing they were asked the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of the dual TV-L1 solver (Zach, Pock and Bischof; Wedel et al.).

    ``lambda_`` weighs the data term; it assumes intensities on the 0-255 scale.
    ``epsilon`` stops a warp once the mean squared flow update falls below ``epsilon**2``.
    ``median_filtering`` is the median kernel applied to the flow before each outer iteration
    (1 or 0 switches it off). ``gamma`` is OpenCV's illumination-change weight.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
    gamma: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not self.tau > 0:
            problems.append(f"tau must be > 0, got {self.tau}")
        if not self.lambda_ > 0:
            problems.append(f"lambda_ must be > 0, got {self.lambda_}")
        if not self.theta > 0:
            problems.append(f"theta must be > 0, got {self.theta}")
        for name in ("nscales", "warps", "inner_iterations", "outer_iterations"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.epsilon >= 0:
            problems.append(f"epsilon must be >= 0, got {self.epsilon}")
        if not 0 < self.scale_step < 1:
            problems.append(f"scale_step must be in (0, 1), got {self.scale_step}")
        if self.median_filtering > 1 and self.median_filtering % 2 == 0:
            problems.append(f"median_filtering must be odd, got {self.median_filtering}")
        if self.gamma < 0:
            problems.append(f"gamma must be >= 0, got {self.gamma}")
        if problems:
            raise ValueError("invalid TVL1Params: " + "; ".join(problems))

    def as_dict(self) -> dict:
        """Plain dict, e.g. for a store's ``flow`` attributes."""
        return asdict(self)


#: Named settings, as overrides of OpenCV's defaults (``compute-flow --preset``). Measured on
#: real 64 x 64 CASIA-B silhouette crops, one core (``python -m benchmarks.tvl1_settings``):
#: default 6.8 pairs/s; medium 23.7 (0.30 px EPE on moving pixels against the defaults);
#: cheap 228 (0.85 px), the CPU chain's choice (its master reached no better with medium).
PRESETS: dict[str, dict[str, int]] = {
    "default": {},
    "medium": {"nscales": 3, "warps": 2, "outer_iterations": 4, "inner_iterations": 10, "median_filtering": 3},
    "cheap": {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 5, "median_filtering": 1},
    "cheapest": {"nscales": 1, "warps": 1, "outer_iterations": 1, "inner_iterations": 5, "median_filtering": 1},
}


def preset(name: str) -> TVL1Params:
    """The parameters of a named preset (``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown TV-L1 preset {name!r}: use one of {', '.join(PRESETS)}")
    return TVL1Params(**PRESETS[name])
