"""Model zoo: `create_model(model_config)` builds a model from a config."""

from vqjax.models.blocks import Decoder, Encoder, ResBlock
from vqjax.models.factory import create_model, level_codebook_sizes, level_names
from vqjax.models.vqvae import HierarchicalVQVAE, SingleLevelVQVAE
