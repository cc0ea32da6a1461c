"""The one name-to-constructor registry: `build_part(config, part)` builds the encoder, the decoder,
the prior or the base model (FLOP counting and the pipeline's loading build through it).

Prior and base networks are chosen by name, so a researcher's own network plugs in without
touching the rest:

    from ulvideo.models import register_network
    register_network("my_net", prior=lambda cfg: MyNet(cfg), base=lambda cfg: MyNet(cfg, cond=True))
    get_preset("small", prior_network="my_net")   # UnifiedLatents, training and sampling use it

A network maps `(z_t, logsnr, labels=None, context_frames=0) -> z_hat`, the clean-latent
prediction of z_t's shape, and has a `num_classes` attribute (0 = unconditional; the value
`num_classes` is the null label used by classifier-free guidance).
"""

from collections.abc import Callable

from torch import nn

from .decoder import Decoder
from .encoder import Encoder
from .presets import ModelConfig

Builder = Callable[[ModelConfig], nn.Module]
NETWORKS: dict[str, dict[str, Builder]] = {"prior": {}, "base": {}}


def register_network(
    name: str, *, prior: Builder | None = None, base: Builder | None = None
) -> None:
    """Make `name` selectable as `ModelConfig.prior_network` and/or `base_network`."""
    if prior is None and base is None:
        raise ValueError(f"register_network({name!r}) needs a prior and/or a base builder")
    for role, builder in (("prior", prior), ("base", base)):
        if builder is not None:
            NETWORKS[role][name] = builder


def build_network(config: ModelConfig, role: str) -> nn.Module:
    """The `role` ("prior" or "base") network named by `config.<role>_network`."""
    name = getattr(config, f"{role}_network")
    if name not in NETWORKS[role]:
        raise ValueError(
            f"unknown {role}_network {name!r}; registered: {sorted(NETWORKS[role])}. Register "
            "yours with ulvideo.models.register_network before building or loading the model"
        )
    return NETWORKS[role][name](config)


def build_prior(config: ModelConfig) -> nn.Module:
    """The stage-1 prior named by `config.prior_network`."""
    return build_network(config, "prior")


def build_base(config: ModelConfig) -> nn.Module:
    """The stage-2 base model named by `config.base_network`."""
    return build_network(config, "base")


BUILDERS: dict[str, Builder] = {
    "encoder": Encoder,
    "decoder": Decoder,
    "prior": build_prior,
    "base": build_base,
}


def build_part(config: ModelConfig, part: str) -> nn.Module:
    """A fresh network for `part`: one of "encoder", "decoder", "prior", "base"."""
    if part not in BUILDERS:
        raise ValueError(f"unknown part {part!r}; valid parts: {', '.join(BUILDERS)}")
    return BUILDERS[part](config)
