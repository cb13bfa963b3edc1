"""The public surface: every ``__all__`` resolves, is documented in docs/api.md, and imports stay cheap.

A name in a module's or sub-package's ``__all__`` is documented by a ``::: module.name`` entry of
docs/api.md for the module that defines it, or by a ``::: module`` entry that renders that whole
module. A name defined in a private module (``eocausal._types.EffectRow``) may instead be
documented where a public module re-exports it in its ``__all__`` (``eocausal.results``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import eocausal

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"
HEAVY = ("torch", "sklearn", "econml", "rasterio", "matplotlib")
CHEAP = ("eocausal", "eocausal.data", "eocausal.estimators", "eocausal.diagnostics", "eocausal.debias",
         "eocausal.study", "eocausal.report")


def _private(modname: str) -> bool:
    return any(part.startswith("_") for part in modname.split("."))


def _public_modules() -> dict[str, types.ModuleType]:
    """Every public module and package of eocausal, imported (the encoders only where torch is)."""
    skip_encoders = importlib.util.find_spec("torch") is None
    mods = {"eocausal": eocausal}
    for info in pkgutil.walk_packages(eocausal.__path__, "eocausal."):
        if _private(info.name) or (skip_encoders and info.name.startswith("eocausal.encoders")):
            continue
        mods[info.name] = importlib.import_module(info.name)
    return mods


def _assigned_names(mod: types.ModuleType) -> set[str]:
    """Names a module's own top-level code assigns (not imports)."""
    try:
        tree = ast.parse(inspect.getsource(mod))
    except (OSError, TypeError):
        return set()
    out = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def _all_modules() -> dict[str, types.ModuleType]:
    """Public modules plus the private ones (where constants and re-exported classes are defined)."""
    mods = dict(_public_modules())
    for name in list(sys.modules):
        if name.startswith("eocausal.") and name not in mods and isinstance(sys.modules[name], types.ModuleType):
            mods[name] = sys.modules[name]
    return mods


def _resolve(modname: str, mod: types.ModuleType, name: str):
    obj = getattr(mod, name)
    # eocausal.report is both a package and the verb report(): its top-level name is the package
    if isinstance(obj, types.ModuleType) and callable(obj) and inspect.isfunction(getattr(obj, name, None)):
        obj = getattr(obj, name)
    return obj


def _homes(obj, name: str, mods: dict[str, types.ModuleType], public: dict[str, types.ModuleType]) -> set[str]:
    """The module(s) whose api.md entry documents ``obj``."""
    if inspect.isclass(obj) or inspect.isfunction(obj):
        homes = {obj.__module__}
    else:  # a constant: the module whose own code assigns it
        homes = {m for m, mod in mods.items() if name in _assigned_names(mod) and getattr(mod, name, None) is obj}
    if all(_private(h) for h in homes):  # defined privately: documented where it is re-exported
        homes |= {m for m, mod in public.items() if name in getattr(mod, "__all__", ())
                  and getattr(mod, name, None) is obj and not hasattr(mod, "__path__")}
    return homes


def _api_targets() -> list[str]:
    return re.findall(r"^::: *([\w.]+)", API.read_text(encoding="utf-8"), re.MULTILINE)


def _import_target(target: str):
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(target)


def test_every_public_name_resolves_and_no_module_shadows_one():
    mods = _public_modules()  # imports every module, so a same-named module would now shadow a name
    missing = [f"{m}.{n}" for m, mod in mods.items() for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]
    assert not missing, f"names in __all__ that do not resolve: {missing}"
    shadowed = [f"{m}.{n}" for m, mod in mods.items() for n in getattr(mod, "__all__", ())
                if isinstance(_resolve(m, mod, n), types.ModuleType)]
    assert not shadowed, f"names in __all__ that are (shadowed by) a module: {shadowed}"


def test_every_subpackage_has_all_and_dir_lists_it():
    for m, mod in _public_modules().items():
        if hasattr(mod, "__path__"):
            assert getattr(mod, "__all__", None), f"{m} has no __all__"
            assert set(mod.__all__) <= set(dir(mod)), m
            assert not any(n.startswith("_") and not n.startswith("__") for n in mod.__all__), m


def test_top_level_is_the_subpackages_and_a_few_verbs():
    assert set(eocausal.__all__) == {
        "estimate", "debiased_effects", "embed", "cate", "rate", "report", "compare", "read_causalimages",
        "read_tfrecord", "Units", "ArraySource", "RasterSource", "RasterSequence", "EmbeddingRaster",
        "EffectTable", "EstimateOptions", "__version__"}
    for sub in ("data", "encoders", "estimators", "diagnostics", "debias", "report", "study", "results", "errors"):
        assert isinstance(getattr(eocausal, sub), types.ModuleType), sub
        assert sub in dir(eocausal), sub
    for moved, home in [("test_calibration", "diagnostics"), ("blp_gates", "diagnostics"), ("Formula", "analysis"),
                        ("EffectRow", "results"), ("CateResult", "estimators"), ("run_study", "study"),
                        ("load_study", "study")]:
        assert moved not in eocausal.__all__
        with pytest.raises(AttributeError, match=moved):
            getattr(eocausal, moved)
        assert hasattr(importlib.import_module(f"eocausal.{home}"), moved), (moved, home)
    assert callable(eocausal.report) and eocausal.report.report.__module__ == "eocausal.report"


def test_docs_api_covers_every_name_in_every_all():
    public = _public_modules()
    mods = _all_modules()
    targets = set(_api_targets())
    uncovered = []
    for m, mod in public.items():
        for name in getattr(mod, "__all__", ()):
            if name.startswith("__"):
                continue
            homes = _homes(_resolve(m, mod, name), name, mods, public)
            assert homes, f"{m}.{name}: cannot tell which module defines it"
            if not any(h in targets or f"{h}.{name}" in targets for h in homes):
                home = min(homes, key=lambda h: (_private(h), h))
                uncovered.append(f"{m}.{name} (document it as ::: {home}.{name})")
    assert not uncovered, "names in __all__ missing from docs/api.md:\n" + "\n".join(sorted(set(uncovered)))


def test_every_api_entry_is_importable():
    targets = _api_targets()
    assert len(targets) > 20
    bad = []
    for t in targets:
        try:
            _import_target(t)
        except (ImportError, AttributeError) as e:
            bad.append(f"{t}: {e}")
    assert not bad, "docs/api.md entries that do not resolve:\n" + "\n".join(bad)
    assert len(targets) == len(set(targets)), [t for t in targets if targets.count(t) > 1]


@pytest.mark.parametrize("package", CHEAP)
def test_importing_a_package_loads_no_heavy_dependency(package):
    code = (f"import sys, {package}\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import {package} loaded {out.strip()}"


def test_a_lazy_name_loads_only_its_module():
    code = ("import sys, eocausal\n"
            "eocausal.estimators.difference_in_means, eocausal.diagnostics.rate\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules], 'eocausal.estimators.weighting' in sys.modules,\n"
            "      'eocausal.diagnostics.rank_average' in sys.modules, 'eocausal.estimators.aipw' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True True False"
