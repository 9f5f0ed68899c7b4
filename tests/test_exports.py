"""The public API is what `iotpush.__all__` says, and nothing drifts."""

from __future__ import annotations

import types

import iotpush


def test_all_names_exist_and_are_sorted_isort_style() -> None:
    for name in iotpush.__all__:
        assert hasattr(iotpush, name), name
    constants = [n for n in iotpush.__all__ if n.isupper()]
    classes = [n for n in iotpush.__all__ if n[0].isupper() and not n.isupper()]
    functions = [n for n in iotpush.__all__ if n[0].islower()]
    assert iotpush.__all__ == sorted(constants) + sorted(classes) + sorted(functions)


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(iotpush).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(iotpush.__all__)


def test_exported_members_come_from_iotpush() -> None:
    for name in iotpush.__all__:
        member = getattr(iotpush, name)
        module = getattr(member, "__module__", "iotpush")
        assert module.startswith("iotpush"), (name, module)
