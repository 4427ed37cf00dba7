"""The paper's Figure 2 grid extended below D_s = 8: K_s in {1024, 2048, 4096,
8192} x D_s in {2, 4, 8, 16, 32, 64, 128}, single-level.

The paper reports that "reducing D_s below 8 leads to a sharp drop in
reconstruction quality" and leaves those settings out of its Figure 2; this
sweep runs them beside the grid. Its D >= 8 members have the same names as
configs/sweeps/figure2.py's, so pointed at the same workdir it runs only the
D = 2 and D = 4 rows (the others are finished runs and are skipped).

  python -m vqjax.sweep --config=configs/reproduction.py:single \\
      --sweep=configs/sweeps/figure2_below8.py --workdir=runs/reproduction/figure2
"""

NUM_CODES = (1024, 2048, 4096, 8192)
CODE_DIMS = (2, 4, 8, 16, 32, 64, 128)


def get_sweep(config):
  if config.model.kind != "single":
    raise ValueError("Figure 2 sweeps the single-level model: use a single-level base "
                     "config such as configs/reproduction.py:single.")
  return [{"name": f"D{d}_K{k}", "model.code_dim": d, "model.num_codes": k}
          for d in CODE_DIMS for k in NUM_CODES]
