"""The paper's Table 1: D = 8 with K_s from 1024 to 8192, then K_s = 8192 with
D from 16 to 128. With configs/paper_single.py it sweeps the single-level
column; with configs/paper_hierarchical.py the hierarchical one (2 x K_h codes,
K_h = K_s / 2, matched by Eq. 5).
"""

ROWS = [(8, 1024), (8, 2048), (8, 4096), (8, 8192),
        (16, 8192), (32, 8192), (64, 8192), (128, 8192)]


def get_sweep(config):
  if config.model.kind == "hierarchical":
    return [{"name": f"D{d}_2x{k // 2}", "model.code_dim": d, "model.num_codes": k // 2}
            for d, k in ROWS]
  return [{"name": f"D{d}_K{k}", "model.code_dim": d, "model.num_codes": k}
          for d, k in ROWS]
