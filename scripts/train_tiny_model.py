"""Train the shipped tiny text-to-video model (``assets/tiny-wan``) from scratch: the entry point of the
trainer in ``scripts/tiny_training/`` (its `cli` module describes the recipe, and ``--help`` prints it).

    python scripts/train_tiny_model.py                       # the shipped recipe: 25 min on one H100
    python scripts/train_tiny_model.py --quick --out /tmp/tw # CPU smoke test, toy sizes, ~1 min
"""

import sys

from tiny_training.cli import main

if __name__ == "__main__":
    sys.exit(main())
