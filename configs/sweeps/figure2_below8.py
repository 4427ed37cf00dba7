"""The paper's Figure 2 grid extended below D_s = 8: configs/sweeps/figure2.py's
K_s in {1024, 2048, 4096, 8192} x D_s in {8, ..., 128}, plus D_s in {2, 4}.

The paper reports that "reducing D_s below 8 leads to a sharp drop in
reconstruction quality" and leaves those settings out of its Figure 2; this
sweep runs them beside the grid. Its D >= 8 members are figure2.py's (same
names), so pointed at the same workdir it runs only the D = 2 and D = 4 rows
(the others are finished runs and are skipped).

  python -m vqjax.experiments.sweep --config=configs/reproduction.py:single \\
      --sweep=configs/sweeps/figure2_below8.py --workdir=runs/reproduction/figure2
"""

import os

from vqjax.experiments import sweep_spec

BELOW_CODE_DIMS = (2, 4)


def get_sweep(config):
  grid = sweep_spec.load_sweep(os.path.join(os.path.dirname(__file__), "figure2.py"), config)
  num_codes = sorted({m["model.num_codes"] for m in grid})
  below = [{"name": f"D{d}_K{k}", "model.code_dim": d, "model.num_codes": k}
           for d in BELOW_CODE_DIMS for k in num_codes]
  return below + grid
