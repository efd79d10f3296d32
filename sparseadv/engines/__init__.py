"""Engines: interchangeable ways to compute one adversarial iteration (see ``base``).

``make_engine(name, net, **options)`` builds one by name; the registry maps names to classes
so that the trainer, the benchmarks and the reports never name an engine class.
"""
from ..errors import InputError, InputTypeError
from .base import COUNTER_NAMES, Engine, ThreatModel
from .certified import CertifiedEngine
from .dense import DenseEngine
from .tree import TreeEngine

ENGINES = {"dense": DenseEngine, "tree": TreeEngine, "certified": CertifiedEngine}


def make_engine(engine, net, **options):
    """An engine bound to ``net``: by name (see ``ENGINES``) or an ``Engine`` instance."""
    if isinstance(engine, Engine):
        if options:
            raise InputTypeError("engine options can only be given with an engine name")
        if engine.net is not net:
            raise InputError("engine is bound to a different network than net")
        return engine
    if not isinstance(engine, str) or engine not in ENGINES:
        # a value that names no engine (of any type): a wrong value of the "engine" choice
        raise InputError(f"engine must be one of {sorted(ENGINES)} or an Engine bound to net, "
                         f"got {engine!r}")
    return ENGINES[engine](net, **options)


__all__ = ["COUNTER_NAMES", "Engine", "ThreatModel", "DenseEngine", "TreeEngine",
           "CertifiedEngine", "ENGINES", "make_engine"]
