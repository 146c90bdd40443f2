"""What a walk looks like: clothes, bags, coats and shoe covers, drawn per sequence.

Appearance is drawn from the *walk's* random stream, independently of the subject, so colours
and textures carry no identity: two walks of one subject wear unrelated clothes and two
subjects can wear the same. Only skin and hair tone come from the subject (small areas, as in
real life). Conditions change the silhouette, never the motion:

- ``nm`` / ``n``: shirt and trousers, each plain, striped or two-tone; short or long sleeves.
- ``bg``: a backpack, a shoulder bag or a hand bag that moves with the body and swings at step
  frequency; ``b`` (TUM-GAID): a backpack.
- ``cl``: a coat in another colour and texture, thicker torso and sleeves and a skirt that hangs
  from the hips to about the knees (hides the gap between the thighs): a clearly wider
  silhouette.
- ``s`` (TUM-GAID): coating shoes, i.e. larger feet in a plastic-like colour.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

Colour = tuple[float, float, float]   # BGR 0..255

PATTERNS = ("plain", "stripes", "two-tone")
BAGS = ("backpack", "shoulder", "hand")


def _colour(rng: np.random.Generator, value: tuple[float, float] = (0.12, 0.92),
            saturation: tuple[float, float] = (0.05, 0.8), hue: tuple[float, float] = (0.0, 1.0)
            ) -> Colour:
    """A random BGR colour; brightness spans dark to light so that grey frames differ too."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*saturation),
                                  rng.uniform(*value))
    return (255.0 * b, 255.0 * g, 255.0 * r)


def _contrast(rng: np.random.Generator, base: Colour) -> Colour:
    """A second colour for patterns: the base made visibly darker or lighter."""
    factor = rng.choice([0.55, 0.7, 1.35, 1.6])
    return tuple(float(np.clip(c * factor + (25 if factor > 1 else 0), 0, 255)) for c in base)


@dataclass(frozen=True)
class Garment:
    colour: Colour
    second: Colour
    pattern: str


@dataclass(frozen=True)
class Appearance:
    """Everything the renderer needs to dress one walk."""

    condition: str
    skin: Colour
    hair: Colour
    shirt: Garment
    trousers: Garment
    shoes: Colour
    long_sleeves: bool
    coat: Garment | None = None
    coat_length: float = 0.85        # fraction of the thigh the coat skirt covers (and beyond)
    bag: str | None = None
    bag_colour: Colour = (0.0, 0.0, 0.0)
    bag_size: float = 1.0
    bag_side: float = -1.0           # -1 right, +1 left
    shoe_cover: bool = False


def subject_look(rng: np.random.Generator) -> tuple[Colour, Colour]:
    """Skin and hair tone of a subject."""
    skin = _colour(rng, value=(0.35, 0.9), saturation=(0.25, 0.55), hue=(0.03, 0.1))
    hair = _colour(rng, value=(0.05, 0.55), saturation=(0.1, 0.6), hue=(0.02, 0.12))
    return skin, hair


def _garment(rng: np.random.Generator) -> Garment:
    base = _colour(rng)
    return Garment(base, _contrast(rng, base), str(rng.choice(PATTERNS)))


def draw_appearance(rng: np.random.Generator, condition: str, skin: Colour, hair: Colour
                    ) -> Appearance:
    """Dress a walk. The same number of draws happens for every condition, so the clothes under
    a coat or with a bag are drawn exactly as for a normal walk of that stream."""
    shirt, trousers = _garment(rng), _garment(rng)
    shoes = _colour(rng, value=(0.05, 0.6), saturation=(0.0, 0.4))
    long_sleeves = bool(rng.random() < 0.5)
    coat = _garment(rng)
    coat_length = float(rng.uniform(0.8, 1.1))
    bag = str(rng.choice(BAGS))
    bag_colour = _colour(rng, value=(0.08, 0.8))
    bag_size = float(rng.uniform(0.9, 1.2))
    bag_side = float(rng.choice([-1.0, 1.0]))
    cover = _colour(rng, value=(0.4, 0.9), saturation=(0.4, 0.9), hue=(0.5, 0.7))
    kind = condition[0]
    return Appearance(
        condition=condition, skin=skin, hair=hair, shirt=shirt, trousers=trousers,
        shoes=cover if kind == "s" else shoes, long_sleeves=long_sleeves or kind == "c",
        coat=coat if kind == "c" else None, coat_length=coat_length,
        bag={"bg": bag, "b": "backpack"}.get(condition),
        bag_colour=bag_colour, bag_size=bag_size, bag_side=bag_side, shoe_cover=kind == "s",
    )
