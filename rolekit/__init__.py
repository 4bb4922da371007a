"""rolekit: design, rehearse and test full-duplex voice personas on PersonaPlex 7B in MLX."""

from rolekit.kernelcache import configure_kernel_caches

__version__ = "0.1.0"

# compiled GPU kernels under $ROLEKIT_CACHE/kernels, for every user of the package (read by MLX
# when it starts CUDA, so before anything imports mlx; `rolekit.kernelcache` says what goes where)
configure_kernel_caches(create=False)
