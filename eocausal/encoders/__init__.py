"""Image encoders: chips -> embeddings, in torch, on the GPU when there is one.

Importing ``eocausal.encoders`` imports torch; the rest of eocausal never does.
"""

from eocausal.encoders.embed import embed
from eocausal.encoders.random_features import RandomFeatures

__all__ = ["RandomFeatures", "embed"]
