"""stabook: the package behind the Sparse Transformation Analysis book.

One chapter, one module: ``stabook.data`` (chapter 1, the sequences), ``stabook.fields`` (chapter 2, the
Helmholtz decomposition), ``stabook.viz`` (figures), and the device and
seeding helpers in ``stabook.runtime``.
"""

from .runtime import get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["get_device", "seed_everything", "__version__"]
