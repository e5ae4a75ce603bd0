"""The shipped tiny text-to-video model: a real diffusers ``WanPipeline`` trained on coloured shapes.

``assets/tiny-wan`` (at the repository root) holds a ~6 M-parameter-per-component Wan pipeline
trained by ``scripts/train_tiny_model.py`` on procedural clips such as
"a red circle moving right on a blue background". It loads offline and generates a 17-frame
64x64 clip on a laptop CPU in seconds, so examples, tests and quality comparisons of the
acceleration methods have a model that learned real attention structure.

    >>> from vidaccel.tiny import load_tiny, generate_tiny
    >>> pipe = load_tiny()
    >>> frames = generate_tiny("a red circle moving right on a blue background", seed=0, pipe=pipe)
    >>> frames.shape   # (T, H, W, 3) uint8
    (17, 64, 64, 3)

The model folder is found, in order, at ``$VIDACCEL_TINY_MODEL``, then ``assets/tiny-wan`` next
to the package's parent directory (a clone or an editable install), then inside the package
(``vidaccel/assets/tiny-wan``, for a wheel that bundles it).

The quality-lab model ``assets/lab-wan`` (`load_lab`, 33 frames x 256 x 256 px, a 9x16x16 token grid)
is trained by the same script (``--recipe lab``) on richer scenes: counts, textured backgrounds, camera
pans, objects that leave and come back.

Modules: `model` (finding, loading and running them), `palette` (the training colours), `captions` (the
caption grammar, written and parsed), `check` (pixel checks: colour, count, direction, re-entry,
background, and the repetition count of high-resolution output), `demo` (a tiny *random-weight* Wan pipeline for `vidaccel
demo` and CPU tries of the CLI), `families` (tiny random-weight transformers and diffusers pipelines of every
supported class, built offline: the tests' models and `vidaccel bench pipeline --model tiny-random --family NAME`).
"""

from .model import (ENV_VAR, GUIDANCE_SCALE, HEIGHT, LAB_ENV_VAR, LAB_HEIGHT, LAB_NUM_FRAMES, LAB_WIDTH,
                    MAX_SEQUENCE_LENGTH, NUM_FRAMES, NUM_STEPS, WIDTH, generate_tiny, lab_model_path, load_lab, load_tiny,
                    tiny_model_path)

__all__ = ["ENV_VAR", "GUIDANCE_SCALE", "HEIGHT", "LAB_ENV_VAR", "LAB_HEIGHT", "LAB_NUM_FRAMES", "LAB_WIDTH",
           "MAX_SEQUENCE_LENGTH", "NUM_FRAMES", "NUM_STEPS", "WIDTH", "generate_tiny", "lab_model_path", "load_lab",
           "load_tiny", "tiny_model_path"]
