"""The diffusers integration every vidaccel method shares; it imports no method.

- `models`: the transformers of a pipeline, architecture identity.
- `adapters`: model-family knowledge (attention modules, blocks, token grid, text position).
- `context`: the per-call step context (grid, step, CFG branch) from one shared tracker hook.
- `registry`, `hookset`: exact hook bookkeeping and the one install/remove template.
- `features`: the feature table (state attributes, who refuses whom).
- `blocks`: hidden-state I/O of a block call.
- `attention_backend`: vidaccel as an attention backend of diffusers' dispatcher (traced by torch.compile).
- `sdpa_swap`: scoped replacement of a module's SDPA call.
- `routing`: which of the two a feature's self-attention takes on a model.
"""
