"""edgekd: train multi-exit TSKD students, compile them into bundles, and run them on edge devices.

The package has two wings over one torch-free core:

* ``edgekd.core`` — contract types and helpers shared by everyone (InputSpec, errors, atomic writes, vote rules).
* torch wing — ``edgekd.training.data``, ``edgekd.training.models``, ``edgekd.training.distill``, ``edgekd.training.loop`` (needs ``edgekd[train]``).
* device wing — build/run/profile, which never import torch.
"""

__version__ = "0.1.0"
