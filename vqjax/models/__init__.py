"""Model zoo: `create_model(model_config)` builds a model from a config."""

from vqjax.models.blocks import Decoder, Encoder, ResBlock
from vqjax.models.factory import create_model, level_names, level_quantizers
from vqjax.models.vqvae import HierarchicalVQVAE, SingleLevelVQVAE
