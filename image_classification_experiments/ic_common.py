"""The one convention of the image-classification family that the shared runtime does not have.

Every JSON file these scripts write (config.json, results.json, the per-point accuracy files, the
converter's manifest, compare_runs.py's table) has its keys sorted, as it always has: files written
before and after a change of the code then compare byte for byte. Writing itself (atomic, UTF-8,
indented, final newline) is ``remind.runtime.write_json``'s.
"""
from remind import runtime


def sorted_keys(obj):
    """A copy of ``obj`` with every dict's keys in sorted order (lists and tuples kept in order)."""
    if isinstance(obj, dict):
        return {k: sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [sorted_keys(v) for v in obj]
    return obj


def write_json(path, obj):
    """``remind.runtime.write_json`` with sorted keys."""
    runtime.write_json(path, sorted_keys(obj))
