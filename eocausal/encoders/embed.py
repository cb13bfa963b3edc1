"""``eocausal.embed``: imagery around each unit -> one embedding row per unit.

Any image source that implements the source protocol works: ``keys_for(units)`` (the chip
key of each unit; units with equal keys share one chip and one embedding), ``load(keys, units)``
(float32 chips for those keys) and ``fingerprint()`` (the source's identity, for caches).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eocausal.data.units import Units
from eocausal.errors import InputError


def embed(units: Units, source, encoder, *, device: str | None = "auto", batch_size: int = 256,
          fit_sample: int = 2000, seed: int | None = 0, progress: bool = False) -> pd.DataFrame:
    """Embed the imagery of each unit.

    Parameters
    ----------
    units : Units
        The study units (their image keys, or places for raster sources).
    source : ArraySource, RasterSource or any object with the source protocol
        Where the chips come from.
    encoder : encoder object
        For example :class:`eocausal.encoders.RandomFeatures`. An unfitted encoder is fitted
        first on up to ``fit_sample`` distinct chips drawn with ``seed``.
    device : str or None
        Overrides the encoder's device ('auto', 'cpu', 'cuda', 'mps'); None keeps it.
    batch_size : int
        Chips read and encoded at a time.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Indexed by unit id, columns ``z0000, z0001, ...`` (float32).
    """
    if not isinstance(units, Units):
        raise InputError(f"units: expected eocausal Units, got {type(units).__name__}")
    for attr in ("keys_for", "load", "fingerprint"):
        if not callable(getattr(source, attr, None)):
            raise InputError(f"source: {type(source).__name__} lacks {attr}(); pass an ArraySource or RasterSource")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be at least 1")
    if device is not None and hasattr(encoder, "device"):
        encoder.device = device

    unit_keys = np.asarray(source.keys_for(units))
    uniq, inverse = np.unique(unit_keys, return_inverse=True)
    if not getattr(encoder, "is_fitted", True):
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(uniq), size=min(fit_sample, len(uniq)), replace=False))
        encoder.fit(source.load(uniq[pick], units))

    batches = range(0, len(uniq), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="embedding", unit="batch", leave=False)
    parts = [encoder.transform(source.load(uniq[s:s + batch_size], units)) for s in batches]
    Z = np.concatenate(parts, axis=0)[inverse]
    cols = [f"z{j:04d}" for j in range(Z.shape[1])]
    return pd.DataFrame(Z, index=pd.Index(units.ids, name=units.frame.index.name), columns=cols)
