"""Typed errors and warnings of eocausal.

Every error derives from :class:`EocausalError` and also from the matching builtin, so
``except ValueError`` keeps working in user code. Messages say which argument, what is wrong,
what was given and what to do.
"""

from __future__ import annotations


class EocausalError(Exception):
    """Root of every error raised by eocausal."""


class InputError(EocausalError, ValueError):
    """An argument or a data value is not usable as given."""


class ColumnError(InputError, KeyError):
    """A named column is missing or holds values of the wrong kind."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CRSError(InputError):
    """A coordinate reference system is missing or incompatible."""


class OverlapError(InputError):
    """Treated and control units do not overlap enough to estimate the effect."""


class SeparationError(OverlapError):
    """The treatment is perfectly predicted by the confounders."""


class NotEstimableError(InputError):
    """An effect cannot be estimated with the data given (too few units in an arm, ...)."""


class StudyFileError(InputError):
    """A study file is malformed: unknown key, wrong type, missing section."""


class PostTreatmentError(InputError):
    """An image confounder would be read from imagery dated on or after a unit's treatment (a
    post-treatment variable); choose earlier imagery or allow it explicitly."""


class DataFileError(EocausalError, OSError):
    """A data file is missing, unreadable or not in the expected format."""


class MissingFileError(DataFileError, FileNotFoundError):
    """A required file does not exist."""


class CacheError(EocausalError, OSError):
    """The embedding cache is unusable (unwritable folder, corrupted shard that cannot be recomputed)."""


class OutputError(EocausalError, OSError):
    """An output folder cannot be written safely."""


class DependencyError(EocausalError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class DeviceError(EocausalError, RuntimeError):
    """The requested compute device is not available."""


class NotFittedError(EocausalError, AttributeError):
    """A fitted attribute was used before ``fit``."""


# ----------------------------------------------------------------------------- warnings


class EocausalWarning(UserWarning):
    """Root of every warning issued by eocausal."""


class OverlapWarning(EocausalWarning):
    """Propensities pile up near 0 or 1, or many were clipped."""


class BalanceWarning(EocausalWarning):
    """Covariates remain imbalanced after weighting."""


class ImageDateWarning(EocausalWarning):
    """Imagery postdates the treatment: its embeddings may be post-treatment variables."""


class DataQualityWarning(EocausalWarning):
    """Input data were altered or dropped under a stated policy (nodata, missing values)."""


class CacheWarning(EocausalWarning):
    """Cached results were found damaged or mismatched and computed again."""


class FewClustersWarning(EocausalWarning):
    """Cluster-robust inference rests on few clusters (or few treated or control clusters)."""


class DebiasWarning(EocausalWarning):
    """A debiasing correction rests on weak calibration evidence."""


def require(module: str, extra: str | None = None, purpose: str = ""):
    """Import an optional dependency lazily, or raise DependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the dependency
        hint = f"pip install 'eocausal[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        what = f" for {purpose}" if purpose else ""
        raise DependencyError(f"{module} is needed{what} but is not installed: {hint}") from exc
