"""Frame and latent-grid arithmetic, the bottom of ulvideo (no ulvideo imports): the one place
that turns a clip's frames x height x width into its latent grid, for the encoder's checks, the
decoder's, the FLOP counts and the data pipeline."""


def frame_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a frame size given as a side length (square) or as (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"a frame size needs height, width >= 1, got {size}")
    return height, width


def latent_grid(
    frames: int, height: int, width: int, temporal_downsample: int, spatial_downsample: int
) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a valid clip: the causal encoder keeps the
    first frame on its own, so 1 + k * temporal_downsample frames give 1 + k latent frames."""
    return (
        1 + (frames - 1) // temporal_downsample,
        height // spatial_downsample,
        width // spatial_downsample,
    )
