"""Image encoders: chips -> embeddings, in torch, on the GPU when there is one.

Every encoder is a scikit-learn estimator (``get_params``, ``set_params``, ``clone``); the
embedding cache's key is :func:`encoder_fingerprint`. Importing ``eocausal.encoders`` imports
torch; the rest of eocausal never does. Unlike the other sub-packages, this one imports its names
eagerly (not through :mod:`eocausal._lazy`): every encoder needs torch anyway, and ``embed`` is
both a function and the module ``embed.py``, so a lazy name would be shadowed by the module
once it is imported.
"""

from eocausal.encoders.embed import embed, encoder_fingerprint
from eocausal.encoders.pretrained import Pretrained
from eocausal.encoders.propensity_cnn import PropensityCNN
from eocausal.encoders.random_features import RandomFeatures
from eocausal.encoders.salience import salience_examples, salience_maps
from eocausal.encoders.temporal import TemporalPool

__all__ = ["Pretrained", "PropensityCNN", "RandomFeatures", "TemporalPool", "embed", "encoder_fingerprint",
           "salience_examples", "salience_maps"]
