"""stabook: the package behind the Sparse Transformation Analysis book.

One chapter, one module:

* ``stabook.data``: chapter 1, sequences of transformations;
* ``stabook.fields``: chapter 2, potential and rotational fields (the Helmholtz decomposition);
* ``stabook.flow``: chapter 3, the probability flow and its density;
* ``stabook.sparse``: chapter 4, the spike-and-slab speed prior and posterior;
* ``stabook.model`` (with ``stabook.nets``): chapter 5, the model and its bound;
* ``stabook.train``: chapter 6, training on CPU, GPU or several GPUs, and the command line;
* ``stabook.metrics``, ``stabook.baselines`` and ``stabook.compare``: chapter 7, evaluation, the VAE and the
  ablations, and their comparison over seeds;
* ``stabook.viz``: figures and animations; ``stabook.explorer``: an interactive field explorer for a static HTML
  page; ``stabook.runtime``: device and seeding;
  ``stabook.doctor``: ``python -m stabook doctor``, a check of the full-scale path on a machine (GPU or CPU).

Layers, each importing only those below it: ``_checks``, ``runtime`` < ``data``, ``fields`` < ``flow``,
``sparse``, ``nets`` < ``model`` < ``baselines`` < ``metrics`` < ``train`` < ``compare``, ``doctor``.
"""

from .runtime import get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["get_device", "seed_everything", "__version__"]
