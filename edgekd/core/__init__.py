"""Torch-free core: contract types and helpers every wing of edgekd may import."""
