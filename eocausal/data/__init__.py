"""Data: study units, imagery sources, embedding products, interop readers and fold assignment.

Names are imported on first use (:mod:`eocausal._lazy`), so ``import eocausal.data`` loads
neither the modules nor rasterio or geopandas.
"""

from __future__ import annotations

from eocausal._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "Units": "eocausal.data.units",
        "ArraySource": "eocausal.data.arrays",
        "RasterSource": "eocausal.data.raster",
        "RasterSequence": "eocausal.data.sequences",
        "EmbeddingRaster": "eocausal.data.embedding_raster",
        "EmbeddingProduct": "eocausal.data.embedding_products",
        "ChipTable": "eocausal.data.chip_tables",
        "read_chip_table": "eocausal.data.chip_tables",
        "Product": "eocausal.data.embedding_products",
        "ALPHAEARTH": "eocausal.data.embedding_products",
        "as_product": "eocausal.data.embedding_products",
        "dequantize": "eocausal.data.embedding_products",
        "CausalImagesData": "eocausal.data.causalimages",
        "TFRecordImages": "eocausal.data.causalimages",
        "read_causalimages": "eocausal.data.causalimages",
        "read_tfrecord": "eocausal.data.causalimages",
        "read_embeddings": "eocausal.data.embedding_files",
        "write_embeddings": "eocausal.data.embedding_files",
        "grouped_folds": "eocausal.data.folds",
        "DemoData": "eocausal.data.simulate",
        "simulate_demo": "eocausal.data.simulate",
        "SupportResult": "eocausal.data.transport",
        "support_diagnostic": "eocausal.data.transport",
        "effects_to_geodataframe": "eocausal.data.transport",
        "write_effect_raster": "eocausal.data.transport",
        "write_effect_raster_blocks": "eocausal.data.transport",
    },
)
