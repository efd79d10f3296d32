"""Engines: interchangeable ways to compute one adversarial iteration (see ``base``).

``make_engine(name, net, **options)`` builds one by name; the registry maps names to classes
so that the sparse engines plug in without the trainer knowing them.
"""
from .base import COUNTER_NAMES, Engine
from .dense import DenseEngine

ENGINES = {"dense": DenseEngine}


def _register_optional():
    # The sparse engines live in their own modules; import lazily so a failure in one of them
    # cannot break the dense baseline.
    try:
        from .tree import TreeEngine
        ENGINES["tree"] = TreeEngine
    except ImportError:
        pass
    try:
        from .certified import CertifiedEngine
        ENGINES["certified"] = CertifiedEngine
    except ImportError:
        pass


_register_optional()


def make_engine(engine, net, **options):
    """An engine bound to ``net``: by name (see ``ENGINES``) or an ``Engine`` instance."""
    if isinstance(engine, Engine):
        if options:
            raise TypeError("engine options can only be given with an engine name")
        if engine.net is not net:
            raise ValueError("engine is bound to a different network than net")
        return engine
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    return ENGINES[engine](net, **options)


__all__ = ["COUNTER_NAMES", "Engine", "DenseEngine", "ENGINES", "make_engine"]
