"""Search spaces as registered data (`spaces.base.Space`): a name mapped to its choices.

Add a space with one `Space(...)` entry: a module here holding `SPACE` plus its name in `BUILTIN`, or
`register_space(Space(...))` from your own code. `get_space` checks a space against the backbone registry
before first use, and the shared test samples every registered space and builds its models.
"""

from __future__ import annotations

from spaces import cpu, paper, tiny
from spaces.base import Space, space_problems

SPACES: dict[str, Space] = {}
_CHECKED: set[str] = set()


def register_space(space: Space) -> Space:
    """Make `space` searchable by name (checked against the backbone registry when first used)."""
    if space.name in SPACES:
        raise ValueError(f"search space {space.name!r} is already registered")
    SPACES[space.name] = space
    return space


BUILTIN = (paper.SPACE, cpu.SPACE, tiny.SPACE)
for _space in BUILTIN:
    register_space(_space)


def list_spaces() -> list[str]:
    """Names of all registered spaces."""
    return sorted(SPACES)


def get_space(name: str) -> Space:
    """The space called `name`, checked (ValueError naming the known spaces, or what is wrong with it)."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(list_spaces())}")
    space = SPACES[name]
    if name not in _CHECKED:
        problems = space_problems(space)
        if problems:
            raise ValueError("; ".join(problems))
        _CHECKED.add(name)
    return space
