"""The paper tooling around the library: sweeps (`vqjax.experiments.sweep`), the
paper's tables and figures (`report`, `run_results`, `plots`), the HQ-VAE
experiment configs (`hqvae_configs`) and dataset preparation (`prepare`).

The library (vqjax: quantizers, models, losses, metrics, data, train,
evaluate, checkpointing, parallel, inference) never imports this package:

  python -m vqjax.experiments.sweep --config=configs/reproduction.py:single \\
      --sweep=configs/sweeps/table1.py --workdir=runs/table1 --seeds=0,1
  python -m vqjax.experiments.report runs/table1 --out=runs/table1
"""
