"""edgekd: train multi-exit TSKD students, compile them into bundles, and run them on edge devices.

Two wings over one torch-free core; the folders say which is which:

* ``edgekd.core`` — the contract both wings share (InputSpec, preprocessing, images and labelled data, vote, early
  exit, the bundle manifest, atomic writes, errors). Imports neither wing.
* ``edgekd.training`` — the torch wing (needs ``edgekd[train]``): data, models, distill, the training loop,
  checkpoints, evaluation, export to a bundle.
* ``edgekd.device`` — the device wing: runners, the graph chain, ``build`` (compiler), ``run`` (runtime),
  ``profile``. Never imports torch or the training wing (import-linter contracts in pyproject.toml).
* ``edgekd.cli`` and ``edgekd.quickstart`` sit on top of both.
"""

__version__ = "0.2.0"
