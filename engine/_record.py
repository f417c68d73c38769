"""Record: a frozen, slotted value class, ~10x cheaper to define than a dataclass.

``@dataclass(frozen=True, slots=True)`` generates and compiles its methods
(exec) for every class: ~1 ms each, paid by every ``vserver NAME start``.
A Record subclass lists its fields in ``__slots__`` (in order) and its
defaults in ``_defaults``; it gets keyword/positional construction,
immutability (AttributeError, like dataclasses' FrozenInstanceError),
equality and hashing by class and fields, a dataclass-like repr,
``__match_args__``, pickling/copying and ``_asdict()``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: this is on every tool's start path
if TYPE_CHECKING:
    from typing import Any


class Record:
    __slots__ = ()
    _defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.__match_args__ = cls.__slots__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self.__slots__
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments")
        setter = object.__setattr__
        for name, value in zip(fields, args, strict=False):
            setter(self, name, value)
        defaults = self._defaults
        for name in fields[len(args) :]:
            if name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif name in defaults:
                setter(self, name, defaults[name])
            else:
                raise TypeError(f"{type(self).__name__}() missing argument '{name}'")
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected {', '.join(kwargs)}")
        self.__post_init__()

    def __post_init__(self) -> None:
        """Validation hook, like a dataclass's."""

    def _astuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field '{name}' of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field '{name}' of {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._astuple() == other._astuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({body})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._astuple())
