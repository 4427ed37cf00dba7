"""Capacity matching between hierarchical and single-level models.

Continuous budget (paper Eq. 4): Hs*Ws*Cs = Hb*Wb*Ch + Ht*Wt*Ch.
Discrete budget (paper Eq. 5):   Ks*Ds = 2*Kh*Dh.
"""

from __future__ import annotations

import ml_collections

from vqjax.models.factory import level_quantizers


def latent_shapes(kind: str, image_size: int) -> dict[str, tuple[int, int]]:
  """Spatial size of each latent map: single H/4; hierarchical bottom H/4, top H/8."""
  if image_size % 8:
    raise ValueError(f"image_size={image_size} must be divisible by 8.")
  if kind == "single":
    return {"codes": (image_size // 4, image_size // 4)}
  return {"top": (image_size // 8, image_size // 8),
          "bottom": (image_size // 4, image_size // 4)}


def continuous_budget(shapes: dict[str, tuple[int, int]], channels: int) -> int:
  """sum over levels of H*W*C (the encoder-output budget of Eq. 4)."""
  return sum(h * w * channels for h, w in shapes.values())


def discrete_budget(num_levels: int, num_codes: int, code_dim: int) -> int:
  """sum over levels of K*D (Eq. 5; all levels share K and D)."""
  return num_levels * num_codes * code_dim


def matched_single_channels(hier_channels: int, bottom_hw: tuple[int, int],
                            top_hw: tuple[int, int],
                            single_hw: tuple[int, int] | None = None) -> int:
  """Cs with Hs*Ws*Cs = Hb*Wb*Ch + Ht*Wt*Ch (Eq. 4); Hs, Ws default to Hb, Wb."""
  hs, ws = single_hw or bottom_hw
  total = (bottom_hw[0] * bottom_hw[1] + top_hw[0] * top_hw[1]) * hier_channels
  if total % (hs * ws):
    raise ValueError(
        f"Eq. 4 has no integer solution: ({bottom_hw} + {top_hw}) x "
        f"C_h={hier_channels} = {total} is not divisible by Hs*Ws={hs * ws}; "
        "choose C_h so that the budget divides.")
  return total // (hs * ws)


def matched_single_codes(hier_num_codes: int, hier_code_dim: int,
                         single_code_dim: int, num_levels: int = 2) -> int:
  """Ks with Ks*Ds = levels*Kh*Dh (Eq. 5)."""
  total = num_levels * hier_num_codes * hier_code_dim
  if total % single_code_dim:
    raise ValueError(
        f"Eq. 5 has no integer solution: {num_levels} x K_h={hier_num_codes} x "
        f"D_h={hier_code_dim} = {total} is not divisible by D_s={single_code_dim}; "
        "choose D_s among the divisors of that budget.")
  return total // single_code_dim


def matched_single_level(hier_model: ml_collections.ConfigDict, image_size: int,
                         code_dim: int | None = None) -> ml_collections.ConfigDict:
  """The single-level model config matched to `hier_model` in Eq. 4 and Eq. 5.

  Everything but kind, channels, num_codes and code_dim is copied. `code_dim`
  (D_s) defaults to the hierarchical D_h.
  """
  if hier_model.kind != "hierarchical":
    raise ValueError(f"expected a hierarchical model config, got kind={hier_model.kind!r}.")
  shapes = latent_shapes("hierarchical", image_size)
  single = ml_collections.ConfigDict(hier_model.to_dict())
  single.kind = "single"
  single.conditioned = False
  single.code_dim = code_dim or hier_model.code_dim
  single.channels = matched_single_channels(hier_model.channels, shapes["bottom"],
                                            shapes["top"])
  single.num_codes = matched_single_codes(hier_model.num_codes, hier_model.code_dim,
                                          single.code_dim)
  return single


def bits_per_position(quantizer) -> float:
  """Bits one latent position of a quantizer (vqjax.quantizers.base) carries:
  log2 K for VQ, G log2(K / G) grouped, L log2 K residual, sum_i log2 L_i
  FSQ, D for LFQ (the quantizer's `bits_per_position`)."""
  return float(quantizer.bits_per_position)


def bits_per_image(model_config: ml_collections.ConfigDict, image_size: int) -> float:
  """Bits of one image's codes: sum over levels of positions x bits per
  position (single/hierarchical models; latent shapes as `latent_shapes`)."""
  shapes = latent_shapes(model_config.kind, image_size)
  return sum(h * w * bits_per_position(q)
             for (h, w), q in zip(shapes.values(), level_quantizers(model_config).values()))
