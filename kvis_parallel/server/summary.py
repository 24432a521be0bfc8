"""Check render options against a stored upload's ``inspect`` summary.

``POST /jobs?upload=<id>`` already has the upload's parts and fields, so a
field, part or component that does not exist gets a 400 at once instead of
a queued job that fails later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UserError

logger = logging.getLogger(__name__)

# Component index in a field's tuple; "mag" works for any field.
_COMPONENT_INDEX = {"x": 0, "y": 1, "z": 2}


def check_options_against_summary(options: Mapping[str, str], summary: Mapping[str, Any]) -> None:
    """Check ``parts``, ``field``, ``association`` and ``component`` against an upload's summary.

    The summary lists the fields of the default parts only (``internal``, or
    every part when there is no internal mesh). With other parts the field is
    left for the renderer to check, because patches may carry other fields.

    Parameters
    ----------
    options
        Request options by their query names, already accepted by the CLI parser.
    summary
        The upload's ``inspect --json`` object.

    Raises
    ------
    UserError
        Naming the missing part, field or component and listing what exists.
    """
    available_parts = [str(part) for part in summary.get("parts") or []]
    default_parts = ["internal"] if "internal" in available_parts else available_parts
    parts = _requested_parts(options.get("parts"), default_parts)
    missing = [part for part in parts if part not in available_parts]
    if available_parts and missing:
        raise UserError(f"part {', '.join(repr(part) for part in missing)} not found in the upload; "
                        f"parts that exist: {', '.join(available_parts)} (choose with parts=)")

    fields = summary.get("fields")
    if not isinstance(fields, list) or sorted(parts) != sorted(default_parts):
        return
    name = options.get("field") or _default_field_name(fields)
    if not name:
        return
    association = options.get("association") or "auto"
    component = options.get("component") or "mag"
    _check_field(name, association, component, fields, is_default=not options.get("field"))


def _default_field_name(fields: list[dict[str, Any]]) -> str | None:
    # The renderer's rule: the first field that is not an id array.
    from ..fields import is_id_array

    for entry in fields:
        name = entry.get("name")
        if isinstance(name, str) and not is_id_array(name):
            return name
    return None


def _requested_parts(text: str | None, default_parts: Sequence[str]) -> list[str]:
    if not text:
        return list(default_parts)
    return [piece.strip() for piece in text.split(",") if piece.strip()]


def _check_field(name: str, association: str, component: str, fields: list[dict[str, Any]],
                 is_default: bool = False) -> None:
    listing = ", ".join(_describe(entry) for entry in fields) or "none"
    same_name = [entry for entry in fields if entry.get("name") == name]
    if not same_name:
        raise UserError(f"field {name!r} not found in the upload; fields that exist: {listing} (choose with field=)")

    matching = [entry for entry in same_name if association == "auto" or entry.get("association") == association]
    if not matching:
        found = ", ".join(str(entry.get("association")) for entry in same_name)
        raise UserError(f"field {name!r} is not {association} data in the upload (it is {found} data); "
                        "use association=auto or association=" + str(same_name[0].get("association")))

    if component == "mag":
        return
    index = _COMPONENT_INDEX.get(component)
    if index is None:
        return
    # The renderer's rule: a scalar has only its magnitude, a vector its first few components.
    if not any(1 < _components(entry) and index < _components(entry) for entry in matching):
        components = _components(matching[0])
        fix = "component=mag" if components == 1 else "component=mag or one of x, y, z that exists"
        if is_default:
            vectors = sorted({str(entry.get("name")) for entry in fields
                              if 1 < _components(entry) and index < _components(entry)})
            fix += f", or give field= with a vector field ({', '.join(vectors) or 'none in the upload'})"
        subject = f"the default field {name!r}" if is_default else f"field {name!r}"
        raise UserError(f"{subject} has {components} component(s), so it has no {component} component; use {fix}")


def _components(entry: Mapping[str, Any]) -> int:
    try:
        return int(entry.get("components") or 1)
    except (TypeError, ValueError):
        return 1


def _describe(entry: Mapping[str, Any]) -> str:
    components = entry.get("components")
    plural = "" if components == 1 else "s"
    return f"{entry.get('name')} ({entry.get('association')}, {components} component{plural})"
