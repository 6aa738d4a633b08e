"""The decorator both numpy kernel sets (ONNX ops, TFLite builtin ops) register their kernel factories with."""
from __future__ import annotations

from typing import Callable, Dict, TypeVar

F = TypeVar("F", bound=Callable[..., object])


def registrar(table: Dict[str, F]) -> Callable[..., Callable[[F], F]]:
    """A decorator factory: ``@register("A", "B")`` puts the decorated factory into ``table`` under each name."""

    def register(*names: str) -> Callable[[F], F]:
        def wrap(factory: F) -> F:
            for name in names:
                table[name] = factory
            return factory

        return wrap

    return register
