"""The tiny-model trainer behind ``python scripts/train_tiny_model.py`` (`cli` describes the recipe; its
``--help`` prints it), by job:

- `config`: the recipe's sizes, steps and time limits (`FULL`, and `QUICK` for the CPU smoke test);
- `builders`: the pipeline's components built new, the text embeddings as WanPipeline makes them and the
  caption-parse probes;
- `common`: what the stages share (resumable CSV logs, checkpoints, RNG states, EMA, autocast);
- `stages`: the training stages (vae, text, dit), each resumable from its checkpoint;
- `evaluation`: `direction_gap` and `swap_sensitivity`, checks of what the model learned;
- `export`: the pipeline folder both ways (exported at the end, or a fine-tuning start) and the loss plot;
- `cli`: the command line and the main flow.

The data are ``scripts/tiny_data.py`` (imported as `tiny_data`: the scripts folder is on ``sys.path``).
"""
