"""Synthetic gait datasets in CASIA-B / TUM-GAID layout, with ground truth, and the toy training store.
May import: sources, person, flow, store, protocols.

Why: every stage of the toolkit must run (tests, CI, the README demo) where the real datasets
are absent, and the data must make the GaitCopy point: identity is in the motion, not in the
clothes. The generative model:

1. **Subject** (``gait.GaitParams``, drawn per subject from the seed): height; proportions
   (hip height, thigh/shank split, trunk length, shoulder and hip width, chest depth, arm
   length, head size, limb girth); gait (cadence 92-128 steps/min, stride 0.68-0.92 x height,
   arm swing 8-32 deg, elbow flexion, knee flexion in swing 48-70 deg and at loading 5-24 deg,
   push-off foot pitch, forward lean, trunk sway, pelvis yaw, extra bounce, head nod); phase
   relations (arm-vs-leg offset, left step early/late, left/right amplitude asymmetry); style
   (arm abduction, toe-out, step width). Ranges are wide and uniform so that subjects differ
   in motion, not only in size.
2. **Pose** (``gait.pose_sequence``): joint angles are periodic functions of the gait phase
   (hip flexion a cosine whose amplitude follows from stride and leg length; knee flexion two
   bumps, loading and swing; foot pitch at heel strike and push-off; arms swing against the
   same-side leg). The pelvis height keeps the lowest foot point on the floor, so the bob
   comes out of the geometry. A walk starts at a random phase and moves at stride x cadence.
3. **Body** (``body``): capsules on the skeleton - legs, feet, a three-column trunk (wide from
   the front, narrow from the side), arms, hands, neck, head with hair and face.
4. **Appearance** (``appearance``, drawn per *walk*, independent of the subject): shirt and
   trousers colours and patterns (plain / stripes / two-tone, bands move with the body),
   sleeve length. ``bg``: backpack, shoulder bag or hand bag swinging at step frequency;
   ``cl``: a coat of another colour and texture, thicker trunk and sleeves and a skirt to
   about the knees (clearly wider silhouette); TUM-GAID ``b``: backpack, ``s``: coating shoes
   (larger feet). Conditions never change the motion, so a clothes- or width-based model
   fails on bg/cl probes while a motion-based one can succeed.
5. **Cameras and scene** (``camera``, ``scene``): CASIA-B views 000..180 step 18 on a circle
   6 m around the path centre (000: the walker approaches, 090: lateral, right to left, 180:
   walks away, changing scale); TUM-GAID one side camera 4.5 m away, walks alternating
   direction (odd numbers right to left). A ray-cast hall (tiled floor, panelled walls with
   marker columns) is the static background; each (subject, view) session has its own exposure
   and white balance (shared with its bkgrd clip); every frame gets mild flicker and noise.
6. **Rendering** (``render``): capsules painted far to near with sub-pixel outlines, darker on
   the far side, plus highlights; the same shapes paint the person mask that gives the
   ground-truth boxes.

Determinism: all randomness comes from ``seeding.rng_for(seed, purpose, ids...)``, keyed by
subject / walk / view, never by generation order. ``render_clip(spec_of(out, seq_id))``
re-renders any written clip with its person masks (``RenderedClip.masks``).
"""

from gaittools.synth.clips import ClipSpec, render_clip, subject_gait
from gaittools.synth.dataset import SynthError, generate_dataset, spec_of
from gaittools.synth.gait import GaitParams
from gaittools.synth.preview import make_preview
from gaittools.synth.render import RenderedClip

__all__ = ["ClipSpec", "GaitParams", "RenderedClip", "SynthError", "generate_dataset",
           "make_preview", "render_clip", "spec_of", "subject_gait"]
