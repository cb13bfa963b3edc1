"""Imagery found through STAC: :meth:`RasterSource.from_stac` and :meth:`RasterSequence.from_stac`.

What is read
------------
Items come from a ``pystac.ItemCollection``, a static ``pystac.Catalog`` or ``Collection`` (its
items and its children's), one ``pystac.Item`` or a list of them, a JSON file of any of these,
or a ``pystac_client`` search (its ``item_collection()``). Nothing here searches a network; a
search result is read like any other item collection, and its COG hrefs through GDAL
(``https://`` as ``/vsicurl/``, ``s3://`` as ``/vsis3/``, ``gs://`` as ``/vsigs/``).

Bands are chosen by name, per item, in the order asked:

1. an asset whose key is the name (``"red"``, ``"B04"``); a multi-band asset (``"visual"``)
   gives all its bands;
2. otherwise the band whose ``name`` or ``common_name`` is the name, in an asset's
   ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1) list. A name two assets both offer is
   refused with both listed (ask for the asset key).

An item's bands are stacked into one Float32 virtual raster (a GDAL VRT held in memory, no
file written): on the finest grid of its assets (coarser assets resampled to it by nearest
neighbour, as GDAL's ``-separate`` stacks), with each band's declared ``raster:bands`` /
``raster:scale`` / ``raster:offset`` applied (value = raw * scale + offset) and its declared
``nodata`` (else the file's own nodata and masks) invalid. Values are therefore physical
(reflectance, not digital numbers) and never rounded: an integer file read directly by
:class:`RasterSource` is averaged in its own type and rounded; through STAC it is not.

Dates come from the items (``datetime``, else ``start_datetime``), as UTC days.
``RasterSource.from_stac`` mosaics every item into one surface (where items overlap, the
first item in the given order with a valid pixel wins; sort the items first, e.g. by cloud
cover) and keeps their dates for :meth:`~RasterSource.check_dates`.
``RasterSequence.from_stac`` makes one frame per date, each a mosaic of that day's items.
All items of one surface must share a CRS (tiles in several UTM zones: filter to one zone, or
reproject); the message names the items and their CRSs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from eocausal.data._raster_common import _gt, as_dates, listed, read_meta, treatment_days
from eocausal.errors import CRSError, DataFileError, InputError, require

__all__ = ["read_items", "item_date", "stac_source", "stac_sequence", "gdal_path", "post_treatment_units"]

_NOT_IMAGES = ("thumbnail", "overview", "metadata")


def _pystac():
    return require("pystac", "stac", "reading STAC catalogs and item collections")


def read_items(items) -> list:
    """The STAC items in ``items`` (see the module notes for what it may be), in their order."""
    pystac = _pystac()
    base = None
    if isinstance(items, (str, os.PathLike)):
        path = Path(items).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"items: {path} is not a file; pass a STAC catalog.json, collection.json, "
                             "item collection (FeatureCollection) or item JSON file")
        try:
            kind = json.loads(path.read_text()).get("type")
        except (OSError, ValueError, AttributeError) as exc:
            raise DataFileError(f"items: {path} cannot be read as STAC JSON ({exc})") from exc
        base = path.parent
        try:
            if kind == "FeatureCollection":
                items = pystac.ItemCollection.from_file(str(path))
            else:
                items = pystac.read_file(str(path))
        except Exception as exc:  # pystac raises several types for malformed JSON
            raise DataFileError(f"items: {path} is not a valid STAC document ({exc})") from exc
    if hasattr(items, "item_collection") and not isinstance(items, pystac.Catalog):
        items = items.item_collection()  # a pystac_client ItemSearch
    if isinstance(items, pystac.Item):
        out = [items]
    elif isinstance(items, pystac.Catalog):  # Collection is a Catalog
        out = list(items.get_items(recursive=True))
    else:
        try:
            out = list(items)
        except TypeError:
            raise InputError(f"items: expected STAC items (an ItemCollection, Catalog, Item, list of "
                             f"Items or a path to STAC JSON), got {type(items).__name__}") from None
    bad = [type(i).__name__ for i in out if not isinstance(i, pystac.Item)]
    if bad:
        raise InputError(f"items: expected pystac.Item objects, got {listed(sorted(set(bad)))}")
    if not out:
        raise InputError("items: the catalog or collection holds no items; check the path or the search")
    dup = sorted(i for i, k in Counter(it.id for it in out).items() if k > 1)
    if dup:
        raise InputError(f"items: the same item id more than once: {listed(dup)}")
    if base is not None:
        for it in out:
            it._eocausal_base = base  # resolves hrefs of items read without self links
    return out


def item_date(item) -> np.datetime64:
    """The item's acquisition day (UTC): ``datetime``, else ``start_datetime``."""
    when = item.datetime
    if when is None:
        start = item.properties.get("start_datetime")
        if start is None:
            raise InputError(f"items: item {item.id!r} has neither datetime nor start_datetime; "
                             "a source needs each item's date")
        return np.datetime64(start.replace("Z", ""), "D")
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return np.datetime64(when.date(), "D")


def gdal_path(href: str) -> str:
    """A STAC href as GDAL opens it: URLs through its virtual file systems, local paths absolute."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    for scheme, vsi in (("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/")):
        if href.startswith(scheme):
            return vsi + href[len(scheme):]
    if href.startswith("file://"):
        href = href[len("file://"):]
    return href if href.startswith("/vsi") else str(Path(href).resolve())


def _href(item, asset) -> str:
    href = asset.get_absolute_href() or asset.href
    if "://" not in href and not os.path.isabs(href):
        base = getattr(item, "_eocausal_base", None)
        if base is None:
            raise InputError(f"items: asset {asset.href!r} of item {item.id!r} is a relative href and the "
                             "item has no self link to resolve it; read the items from their JSON file "
                             "or make the hrefs absolute (catalog.make_all_asset_hrefs_absolute())")
        href = str(Path(base) / href)
    return gdal_path(href)


def _band_entries(asset) -> list[dict]:
    """Per band of an asset: name, common name, scale, offset, nodata (STAC 1.0 or 1.1 fields)."""
    d = asset.to_dict()
    eo, rb, b11 = d.get("eo:bands") or [], d.get("raster:bands") or [], d.get("bands") or []
    out = []
    for i in range(max(len(eo), len(rb), len(b11))):
        e = eo[i] if i < len(eo) else {}
        r = rb[i] if i < len(rb) else {}
        b = b11[i] if i < len(b11) else {}
        out.append({"name": b.get("name") or e.get("name"),
                    "common_name": b.get("eo:common_name") or e.get("common_name"),
                    "scale": b.get("raster:scale", r.get("scale")),
                    "offset": b.get("raster:offset", r.get("offset")),
                    "nodata": b.get("nodata", r.get("nodata"))})
    return out


def _is_image(asset) -> bool:
    roles = set(asset.roles or ())
    return not (roles & set(_NOT_IMAGES)) and (asset.media_type is None or "image" in asset.media_type
                                                or "tiff" in asset.media_type)


def _select(item, bands: list[str]) -> list[tuple]:
    """(asset key, href, 1-based band in the asset, name, scale, offset, nodata) per band asked."""
    chosen = []
    for name in bands:
        if name in item.assets:
            a = item.assets[name]
            entries = _band_entries(a)
            if len(entries) > 1:
                for k, e in enumerate(entries, 1):
                    chosen.append((name, _href(item, a), k, e["name"] or f"{name}_{k}",
                                   e["scale"], e["offset"], e["nodata"]))
            else:
                e = entries[0] if entries else {}
                chosen.append((name, _href(item, a), 1, name, e.get("scale"), e.get("offset"), e.get("nodata")))
            continue
        hits = [(key, k, e) for key, a in item.assets.items() if _is_image(a)
                for k, e in enumerate(_band_entries(a), 1) if name in (e["name"], e["common_name"])]
        if not hits:
            avail = sorted({key for key, a in item.assets.items() if _is_image(a)}
                           | {v for a in item.assets.values() if _is_image(a) for e in _band_entries(a)
                              for v in (e["name"], e["common_name"]) if v})
            raise InputError(f"bands: item {item.id!r} has no asset or band named {name!r}; it offers "
                             f"{listed(avail, 30)}")
        if len({h[0] for h in hits}) > 1:
            raise InputError(f"bands: {name!r} is a band of several assets of item {item.id!r} "
                             f"({listed(sorted({h[0] for h in hits}))}); ask for one of them by its asset key")
        key, k, e = hits[0]
        chosen.append((key, _href(item, item.assets[key]), k, name, e["scale"], e["offset"], e["nodata"]))
    return chosen


def _stack(item, bands: list[str]) -> tuple[str, object, tuple[str, ...]]:
    """One item's bands as an inline Float32 VRT on the finest grid of its assets; its CRS; band names."""
    from affine import Affine

    chosen = _select(item, bands)
    metas = {}
    for _, href, *_rest in chosen:
        if href not in metas:
            try:
                metas[href] = read_meta(href)
            except Exception as exc:
                raise type(exc)(f"items: item {item.id!r}: {exc}") from exc
    crss = {m.crs for m in metas.values()}
    if len(crss) > 1:
        raise CRSError(f"items: the assets of item {item.id!r} are in several CRSs "
                       f"({listed(sorted(c.to_string() for c in crss))}); reproject them to one first")
    ms = list(metas.values())
    bounds = np.array([m.bounds for m in ms])
    a = min(m.transform.a for m in ms)
    e = -min(-m.transform.e for m in ms)  # the finest row height (e < 0: north-up)
    x0, y1 = bounds[:, 0].min(), bounds[:, 3].max()
    width = int(round((bounds[:, 2].max() - x0) / a))
    height = int(round((y1 - bounds[:, 1].min()) / -e))
    bands_xml = []
    for k, (_, href, b, name, scale, offset, nodata) in enumerate(chosen, 1):
        m = metas[href]
        xo, yo = (m.transform.c - x0) / a, (m.transform.f - y1) / e
        xs, ys = m.width * m.transform.a / a, m.height * m.transform.e / e
        src = (f'<SourceFilename relativeToVRT="0">{escape(href)}</SourceFilename><SourceBand>{b}</SourceBand>'
               f'<SrcRect xOff="0" yOff="0" xSize="{m.width}" ySize="{m.height}"/>'
               f'<DstRect xOff="{xo!r}" yOff="{yo!r}" xSize="{xs!r}" ySize="{ys!r}"/>')
        if nodata is not None:
            src += f"<NODATA>{float(nodata)!r}</NODATA>"
        elif not m.all_valid:
            src += "<UseMaskBand>true</UseMaskBand>"
        if scale is not None or offset is not None:
            src += (f"<ScaleOffset>{float(offset or 0.0)!r}</ScaleOffset>"
                    f"<ScaleRatio>{float(1.0 if scale is None else scale)!r}</ScaleRatio>")
        bands_xml.append(f'<VRTRasterBand dataType="Float32" band="{k}"><Description>{escape(name)}</Description>'
                         f"<NoDataValue>nan</NoDataValue><ComplexSource>{src}</ComplexSource></VRTRasterBand>")
    crs = ms[0].crs
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{escape(crs.to_wkt())}</SRS>'
           f"<GeoTransform>{_gt(Affine(a, 0.0, x0, 0.0, e, y1))}</GeoTransform>{''.join(bands_xml)}</VRTDataset>")
    return xml, crs, tuple(c[3] for c in chosen)


def _bands_arg(bands) -> list[str]:
    if isinstance(bands, str):
        bands = [bands]
    try:
        bands = list(bands)
    except TypeError:
        bands = None
    if not bands or not all(isinstance(b, str) for b in bands):
        raise InputError(f"bands: name the bands to read (asset keys or band names such as ['red', 'green', "
                         f"'blue'] or ['B04', 'B03', 'B02']), got {bands!r}")
    return bands


def _stacks(items, bands) -> tuple[list, list[str], list[np.datetime64]]:
    """Per item (in order): VRT, and the date; checks one CRS and one band list across items."""
    items, bands = read_items(items), _bands_arg(bands)
    xmls, crss, names, dates = [], [], set(), []
    for it in items:
        xml, crs, nm = _stack(it, bands)
        xmls.append(xml)
        crss.append(crs)
        names.add(nm)
        dates.append(item_date(it))
    if len(set(crss)) > 1:
        detail = "; ".join(f"{it.id}: {c.to_string()}" for it, c in zip(items, crss))
        raise CRSError(f"items: the items of one surface must share a CRS, got {detail}. Keep the items of one "
                       "projection (e.g. [i for i in items if i.properties.get('proj:code') == 'EPSG:32636']) "
                       "or reproject the assets")
    if len(names) > 1:
        raise InputError(f"bands: the items resolve {bands} to different band lists {sorted(names)}; ask for "
                         "band names every item offers")
    return xmls, [it.id for it in items], dates


def stac_source(items, bands, **options):
    """A :class:`~eocausal.data.raster.RasterSource` over every item (one mosaic, first item wins)."""
    from eocausal.data.raster import RasterSource

    if "dates" in options:
        raise InputError("dates: a STAC source takes its dates from the items")
    where = str(items) if isinstance(items, (str, os.PathLike)) else None
    xmls, ids, dates = _stacks(items, bands)
    src = RasterSource(xmls, dates=sorted(set(dates)), **options)
    src.stac_items = tuple(ids)
    src.item_dates = tuple(dates)
    src.provenance = _provenance(where, ids, dates, src.bands)
    return src


def _provenance(where, ids, dates, bands) -> dict:
    """What ``embed`` records of a STAC source's imagery (into the embeddings' provenance)."""
    return {"kind": "stac", "catalog": where, "items": list(ids), "dates": sorted({str(d) for d in dates}),
            "bands": list(bands)}


def post_treatment_units(item_dates, treatment_dates) -> np.ndarray:
    """Per unit: True when an item is dated on or after the unit's treatment date (None, NaN or ""
    : never treated). Every item of a mosaic may reach any unit, so any such item counts."""
    days = treatment_days(treatment_dates, len(treatment_dates))
    return ~np.isnat(days) & (max(as_dates(list(item_dates), "item dates")) >= days)


def stac_sequence(items, bands, **options):
    """A :class:`~eocausal.data.sequences.RasterSequence`: one frame per item date (a mosaic of that
    day's items, in their given order)."""
    from eocausal.data.sequences import RasterSequence

    where = str(items) if isinstance(items, (str, os.PathLike)) else None
    xmls, ids, dates = _stacks(items, bands)
    by_date: dict = {}
    for x, d in zip(xmls, dates):
        by_date.setdefault(d, []).append(x)
    seq = RasterSequence(by_date, **options)
    seq.stac_items = tuple(ids)
    seq.item_dates = tuple(dates)
    seq.provenance = _provenance(where, ids, dates, seq.bands)
    return seq
