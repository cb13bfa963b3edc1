"""Simulated imagery for the embedded demo study: a visible image feature confounds.

Each chip shows vegetation-like background with bright "built-up" blobs covering a share
``s`` of it. The share drives both treatment and outcome, alongside one tabular covariate::

    logit P(W = 1) = -0.4 + 1.2 s_std + 0.5 x1
    Y = tau W + 2 s_std + 0.5 x1 + N(0, 1)

(s_std: the share standardised over images). Several units share one image, as villages share
a scene, so the image key is the cluster. The naive difference in means is biased upward;
adjusting for x1 alone leaves most of the bias; adjusting for the image removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from eocausal.data.arrays import ArraySource
from eocausal.data.units import Units

_BACKGROUND = np.array([60.0, 105.0, 50.0])  # dark green vegetation (R, G, B)
_BUILT = np.array([205.0, 195.0, 190.0])  # bright roofs


@dataclass(frozen=True)
class DemoData:
    """Units, their imagery and the true effect of the simulated demo."""

    units: Units
    source: ArraySource
    true_effect: float
    built_share: np.ndarray  # per unit, the true image confounder


def _chip(rng: np.random.Generator, px: int, target: float) -> tuple[np.ndarray, float]:
    yy, xx = np.mgrid[0:px, 0:px]
    coarse = rng.normal(0, 1, (px // 8 + 1, px // 8 + 1, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:px, :px] * 12.0
    img = _BACKGROUND + texture + rng.normal(0, 6, (px, px, 3))
    mask = np.zeros((px, px), bool)
    while mask.mean() < target:
        cy, cx = rng.uniform(0, px, 2)
        r = rng.uniform(1.5, px / 6)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[mask] = _BUILT + rng.normal(0, 10, (mask.sum(), 3))
    return np.clip(img, 0, 255).round().astype(np.uint8), float(mask.mean())


def simulate_demo(*, n_images: int = 500, units_per_image: int = 2, px: int = 32, tau: float = 1.0,
                  seed: int = 20260101) -> DemoData:
    """Simulate the demo study (deterministic for a seed).

    Returns
    -------
    DemoData
        ``units`` (ids ``u00000...``, treatment ``W``, outcome ``Y``, covariate ``x1``,
        ``image_key``, lon/lat points in EPSG:4326), ``source`` (an ArraySource of
        (n_images, px, px, 3) uint8 chips) and ``true_effect`` = tau.
    """
    rng = np.random.default_rng(seed)
    targets = rng.uniform(0.02, 0.5, n_images)
    chips, share = zip(*(_chip(rng, px, t) for t in targets))
    share = np.asarray(share)
    s_std = (share - share.mean()) / share.std()
    n = n_images * units_per_image
    img_of_unit = np.repeat(np.arange(n_images), units_per_image)
    x1 = rng.normal(0, 1, n)
    s_u = s_std[img_of_unit]
    logit = -0.4 + 1.2 * s_u + 0.5 * x1
    w = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    y = tau * w + 2.0 * s_u + 0.5 * x1 + rng.normal(0, 1, n)
    # places: images on a grid over a made-up area, units jittered inside their image
    side = int(np.ceil(np.sqrt(n_images)))
    lon = 32.0 + (img_of_unit % side) * 0.02 + rng.uniform(0, 0.01, n)
    lat = 2.0 + (img_of_unit // side) * 0.02 + rng.uniform(0, 0.01, n)
    frame = pd.DataFrame({"unit": [f"u{i:05d}" for i in range(n)], "W": w, "Y": y, "x1": x1,
                          "image_key": img_of_unit, "lon": lon, "lat": lat})
    units = Units.from_frame(frame, id="unit", treatment="W", outcome="Y", covariates=["x1"],
                             image_key="image_key", lon="lon", lat="lat")
    source = ArraySource(np.stack(chips), keys=np.arange(n_images), bands=["red", "green", "blue"])
    return DemoData(units=units, source=source, true_effect=float(tau), built_share=share[img_of_unit])
