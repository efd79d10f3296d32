"""Bridge to PyTorch (optional extra ``torch``): the same network as an ``nn.Module``.

Used to cross-check sparseadv's attacks against a well-known attack library. Filled in by the
robustness work; importing torch happens only when this module's functions are called.
"""


def to_torch(net, dtype=None):
    raise NotImplementedError("to_torch is not implemented yet")
