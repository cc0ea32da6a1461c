"""ulvideo: Unified Latents (Heek et al., 2026) for video generation."""

__version__ = "0.1.0"

from .pipeline import Pipeline  # noqa: E402
from .ul import UnifiedLatents  # noqa: E402

__all__ = ["Pipeline", "UnifiedLatents", "__version__"]
