"""The paper's Figure 1: the codebook-collapse interventions, one at a time, for
the hierarchical model and its capacity-matched single-level model.

Stages (cumulative): `none` (uniform codebook init, no dead-code reset, D = 64),
`init` (codes initialised from encoder outputs), `reset` (+ the windowed
dead-code reset, threshold 2, window 10), `lowdim` (+ D = 16 at the same
discrete budget, Eq. 5: K D = 65,536 per hierarchical level). Every stage runs
for both architectures, whichever paper config is the base (its data and
training settings are kept; the model fields are set per member).

  python -m vqjax.experiments.sweep --config=configs/paper_hierarchical.py \\
      --sweep=configs/sweeps/figure1.py --workdir=runs/figure1 --list
"""

from vqjax import config_lib

LEVEL_BUDGET = 65_536  # K_h * D_h per hierarchical level
STAGES = (  # name, codebook_init, reset_threshold (0: never reset), D
    ("none", "uniform", 0.0, 64),
    ("init", "data", 0.0, 64),
    ("reset", "data", 2.0, 64),
    ("lowdim", "data", 2.0, 16),
)


def _overrides(base, new, prefix: str = "model") -> dict:
  """Dotted overrides turning base into new (only the fields that differ; into
  the quantizer's config while its kind stays)."""
  out = {}
  for k, v in new.items():
    old = base.get(k)
    if hasattr(v, "items") and hasattr(old, "items") and old.get("kind") == v.get("kind"):
      out.update(_overrides(old, v, f"{prefix}.{k}"))
    elif old != v:
      out[f"{prefix}.{k}"] = v
  return out


def get_sweep(config):
  members = []
  for arch in ("hier", "single"):
    for stage, init, threshold, d in STAGES:
      hier = config_lib.hierarchical_model(num_codes=LEVEL_BUDGET // d, code_dim=d)
      model = hier if arch == "hier" else config_lib.single_model(
          LEVEL_BUDGET // d, d, config.data.image_size)
      model.quantizer.codebook_init, model.quantizer.reset_threshold = init, threshold
      members.append(dict(name=f"{arch}_{stage}", **_overrides(config.model, model)))
  return members
