"""A prior on a tokenizer's codes: an autoregressive transformer (docs/PRIOR.md).

  layout.py    the token sequence of an image's codes (levels coarsest first,
               raster order, entries innermost, one vocabulary), unigram baselines
  model.py     the decoder-only transformer, the per-segment log-softmax
  data.py      grain loaders over the codes files of --mode=encode
  train.py     state, the jitted data-parallel step, the loop, checkpoints,
               --mode=eval and --mode=sample
  evaluate.py  validation NLL in bits per image and per code -> metrics.json
  sample.py    temperature / top-k sampling, decoding with vqjax.load

  python -m vqjax.main --config=configs/prior.py --workdir=runs/prior \\
      --config.prior.codes=runs/default/codes/train.array_record \\
      --config.prior.tokenizer=runs/default

This package sits on top of the library (it imports vqjax.export,
vqjax.inference, ...); only vqjax.main imports it.
"""

from vqjax.prior.train import evaluate_checkpoint, run, sample_checkpoint, train_and_evaluate

__all__ = ["evaluate_checkpoint", "run", "sample_checkpoint", "train_and_evaluate"]
