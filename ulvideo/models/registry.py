"""The one name-to-constructor registry: `build_part(config, part)` builds the encoder, the decoder,
the prior or the base model (FLOP counting and the pipeline's loading build through it).

Prior and base networks are chosen by name, so a researcher's own network plugs in without
touching the rest:

    from ulvideo.models import register_network
    register_network("my_net", prior=lambda cfg: MyNet(cfg), base=lambda cfg: MyNet(cfg, cond=True))
    autoencoder_preset("small", prior_network="my_net")   # UnifiedLatents and its training use it
    base_preset("small", network="my_net")                # the stage-2 base model

A network maps `(z_t, logsnr, labels=None, context_frames=0) -> z_hat`, the clean-latent
prediction of z_t's shape, and has a `num_classes` attribute (0 = unconditional; the value
`num_classes` is the null label used by classifier-free guidance).
"""

from collections.abc import Callable

from torch import nn

from .decoder import Decoder
from .encoder import Encoder
from .presets import AutoencoderConfig, BaseConfig

Builder = Callable[[AutoencoderConfig | BaseConfig], nn.Module]
NETWORKS: dict[str, dict[str, Builder]] = {"prior": {}, "base": {}}


def register_network(
    name: str, *, prior: Builder | None = None, base: Builder | None = None
) -> None:
    """Make `name` selectable as `AutoencoderConfig.prior_network` and/or `BaseConfig.network`."""
    if prior is None and base is None:
        raise ValueError(f"register_network({name!r}) needs a prior and/or a base builder")
    for role, builder in (("prior", prior), ("base", base)):
        if builder is not None:
            NETWORKS[role][name] = builder


def build_network(config: AutoencoderConfig | BaseConfig, role: str) -> nn.Module:
    """The `role` network named by `config.prior_network` ("prior") or `config.network` ("base")."""
    name = config.prior_network if role == "prior" else config.network
    if name not in NETWORKS[role]:
        raise ValueError(
            f"unknown {role} network {name!r}; registered: {sorted(NETWORKS[role])}. Register "
            "yours with ulvideo.models.register_network before building or loading the model"
        )
    return NETWORKS[role][name](config)


def build_prior(config: AutoencoderConfig) -> nn.Module:
    """The stage-1 prior named by `config.prior_network`."""
    return build_network(config, "prior")


def build_base(config: BaseConfig) -> nn.Module:
    """The stage-2 base model named by `config.network`."""
    return build_network(config, "base")


BUILDERS: dict[str, Builder] = {
    "encoder": Encoder,
    "decoder": Decoder,
    "prior": build_prior,
    "base": build_base,
}


def build_part(config: AutoencoderConfig | BaseConfig, part: str) -> nn.Module:
    """A fresh network for `part`: "encoder", "decoder", "prior" (from an AutoencoderConfig) or
    "base" (from a BaseConfig)."""
    if part not in BUILDERS:
        raise ValueError(f"unknown part {part!r}; valid parts: {', '.join(BUILDERS)}")
    return BUILDERS[part](config)
