"""``edgekd profile``: latency measurement and early-exit sweeps on a built bundle (device side, no torch)."""
