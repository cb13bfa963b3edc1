"""Public names of a package imported on first use (layer 1).

A package's ``__init__`` names each public object and the module that defines it; nothing is
imported until the name is used, so ``import eocausal`` and ``import eocausal.diagnostics``
load neither the modules nor their dependencies (scikit-learn, scipy, matplotlib, torch)::

    from eocausal._lazy import attach

    __getattr__, __dir__, __all__ = attach(__name__, {"rate": "eocausal.diagnostics.rank_average"})

This is PEP 562 (module ``__getattr__``), as in scientific-python's ``lazy_loader``. Keep a
public name different from the name of a module in the same package: importing
``pkg.name`` binds the module to ``pkg.name``, which then shadows the lazy name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping

__all__ = ["attach"]


def attach(package: str, names: Mapping[str, str], *, submodules: Iterable[str] = (),
           defined: Iterable[str] = ()) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """Build ``__getattr__``, ``__dir__`` and ``__all__`` for a package with lazy public names.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : mapping of str to str
        Public name -> the module that defines it (``"rate": "eocausal.diagnostics.rank_average"``).
    submodules : iterable of str, optional
        Sub-modules reachable as attributes (``eocausal.data``) without an explicit import; they
        are listed by ``dir()`` but not in ``__all__``, so ``from package import *`` imports none.
    defined : iterable of str, optional
        Other public names: defined by the package's ``__init__`` itself, or a sub-module that is
        also a verb (``eocausal.report``); they join ``__all__``.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__, __all__)``, to assign at the package's top level.
    """
    names = dict(names)
    submodules = frozenset(submodules)
    public = sorted(set(names) | set(defined))

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(public) | submodules)

    return __getattr__, __dir__, public
