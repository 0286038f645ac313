"""sevila-kit: a readable re-implementation of SeViLA (Yu et al., NeurIPS 2023) on transformers' BLIP-2 parts."""

__version__ = "0.1.0"
