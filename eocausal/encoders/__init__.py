"""Image encoders: chips -> embeddings, in torch, on the GPU when there is one.

Importing ``eocausal.encoders`` imports torch; the rest of eocausal never does.
"""

from eocausal.encoders.embed import embed
from eocausal.encoders.pretrained import Pretrained
from eocausal.encoders.propensity_cnn import PropensityCNN
from eocausal.encoders.random_features import RandomFeatures
from eocausal.encoders.salience import salience_gallery, salience_maps
from eocausal.encoders.temporal import TemporalPool

__all__ = ["Pretrained", "PropensityCNN", "RandomFeatures", "TemporalPool", "embed", "salience_gallery",
           "salience_maps"]
