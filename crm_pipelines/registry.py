"""Registries: implementations a declaration names (a paging kind, an upsert style, a file format), by name.

A system says which protocol it speaks by name (``paging.kind: cursor``, ``auth.kind: session``,
``upsert.style: odata_batch``, ``incremental.format: sdata``). Each family of protocols has one
:class:`Registry` keyed by those names. An implementation registers itself when its module is
imported (``@PAGING_KINDS.register("cursor")``), and the family's package imports its built-in
modules, so the registry is full before anything looks in it: a new protocol is a new module.

:class:`DeclarationRegistry` holds the pydantic models of a family, keyed by their discriminator
(``kind``, ``style``), and builds the discriminated union a system declaration validates against.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Generic, TypeVar, get_args

from pydantic import BaseModel, Field

__all__ = ["DeclarationRegistry", "Registry", "UnknownKindError"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class UnknownKindError(LookupError):
    """A name nothing registered; the message names it and lists the known ones."""


class Registry(Generic[T]):
    """Implementations of one family of protocols, by name, in the order they registered.

    Args:
        what: What a name names, for messages (``"paging kind"``, ``"cursor format"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function as ``name``.

        Args:
            name: The name a declaration uses for it.

        Returns:
            A decorator returning its argument unchanged.
        """

        def decorate(item: T) -> T:
            self.add(name, item)
            return item

        return decorate

    def add(self, name: str, item: T) -> None:
        """Register ``item`` as ``name``; a name registered twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered ({self._entries[name]!r})")
        self._entries[name] = item

    def get(self, name: str) -> T:
        """The implementation registered as ``name``.

        Raises:
            UnknownKindError: Nothing registered that name (the message lists the known names).
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownKindError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The message for a name nothing registered."""
        return f"unknown {self.what} {name!r}; known: {', '.join(self._entries) or '(none)'}"

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def values(self) -> list[T]:
        """The registered implementations, in registration order."""
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        """(name, implementation) pairs, in registration order."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class DeclarationRegistry(Registry[type[M]]):
    """The declaration models of one family, keyed by the value of their discriminator field.

    A model registers under the one value its discriminator allows (``kind: Literal["cursor"]``
    registers as ``"cursor"``); anything else is refused at import time.

    Args:
        what: What a name names, for messages.
        discriminator: The field whose value picks the model (``kind``, ``style``).
    """

    def __init__(self, what: str, *, discriminator: str) -> None:
        super().__init__(what)
        self.discriminator = discriminator

    def add(self, name: str, item: type[M]) -> None:
        field = item.model_fields.get(self.discriminator)
        allowed = get_args(field.annotation) if field is not None else ()
        if allowed != (name,):
            raise TypeError(
                f"{item.__name__} registers as {self.what} {name!r}: its {self.discriminator} field must "
                f"be Literal[{name!r}]"
            )
        super().add(name, item)

    def union(self) -> Any:
        """The registered models as one pydantic field type, told apart by the discriminator.

        Errors then name the variant that failed (``auth.session.login_path: Field required``) and
        an unknown value lists the registered ones. Built when the field's model is defined, so
        every model must be registered before that.
        """
        models = self.values()
        if not models:
            raise TypeError(f"no {self.what} is registered")
        return Annotated[functools.reduce(operator.or_, models), Field(discriminator=self.discriminator)]
