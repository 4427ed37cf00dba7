"""The paper's Figure 2: the single-level model over codebook size
K_s in {1024, 2048, 4096, 8192} x code dimension D_s in {8, 16, 32, 64, 128}.

  python -m vqjax.experiments.sweep --config=configs/paper_single.py \\
      --sweep=configs/sweeps/figure2.py --workdir=runs/figure2 --list
"""

NUM_CODES = (1024, 2048, 4096, 8192)
CODE_DIMS = (8, 16, 32, 64, 128)


def get_sweep(config):
  if config.model.kind != "single":
    raise ValueError("Figure 2 sweeps the single-level model: use a single-level base "
                     "config such as configs/paper_single.py.")
  return [{"name": f"D{d}_K{k}", "model.code_dim": d, "model.num_codes": k}
          for d in CODE_DIMS for k in NUM_CODES]
