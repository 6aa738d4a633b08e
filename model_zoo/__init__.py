"""slidelite.zoo: PyTorch definitions of the Slide-Transformer architectures (needs the ``convert`` extra).

    >>> from slidelite.zoo import create_model, list_models, reparameterize_model
    >>> model = create_model("slide_swin_tiny")
    >>> deployable = reparameterize_model(model)
"""
from ._registry import (PretrainedConfig, UnknownModelError, create_model, get_model_entry, get_pretrained_cfg,
                        list_models, register_model)
from .slide_attention import SlideAttention, reparameterize_model
from . import slide_swin  # noqa: F401  (registers the Slide-Swin family)
from . import efficientnet_lite  # noqa: F401  (registers the shipped default CNN)
from . import pvt, pvt_v2, baselines  # noqa: F401  (register PVT / PVTv2 / Slide-PVT and the benchmark baselines)
from .checkpoint import Checkpoint, CheckpointError, build_from_checkpoint, load_state_dict_into, read_checkpoint
from .complexity import count_flops, count_params

__all__ = ["PretrainedConfig", "UnknownModelError", "create_model", "get_model_entry", "get_pretrained_cfg",
           "list_models", "register_model", "SlideAttention", "reparameterize_model", "Checkpoint", "CheckpointError",
           "build_from_checkpoint", "load_state_dict_into", "read_checkpoint", "count_flops", "count_params"]
