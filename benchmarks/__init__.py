"""Speed and accuracy benchmarks of eocausal.

Each is a module: run it from the repository root as ``python -m benchmarks.NAME`` (see its
docstring); it appends its runs to ``benchmarks/results/NAME.md``.
"""
