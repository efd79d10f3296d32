"""Bridge to PyTorch (optional extra ``torch``): the same network as an ``nn.Module``.

Used to cross-check sparseadv's attacks against a well-known attack library (the Adversarial
Robustness Toolbox's PGD in ``tests/test_torch_crosscheck.py``). torch is imported only when
:func:`to_torch` is called, so sparseadv itself never needs it.
"""
from .errors import InputError, InputTypeError


def to_torch(net, dtype=None, logits=False):
    """A ``torch.nn.Module`` computing f(W, x) = m^{-1/2} sum_r a_r relu(<w_r, x> - b).

    Parameters
    ----------
    net : ShiftedReLUNet
        Its W, a and b are copied into buffers (the module has no trainable parameters).
    dtype : torch dtype, optional
        Default ``torch.float64``, so that the outputs agree with the numpy network to
        round-off.
    logits : bool
        False: ``module(x)`` returns f, shape (n,). True: the two-logit classifier
        ``[-f, f]``, shape (n, 2), whose class 1 is the label +1 (for attack libraries that
        expect a multi-class model; its cross-entropy is softplus(-2 y f), decreasing in y·f).
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError("to_torch needs PyTorch: pip install 'sparseadv[torch]'") from err
    from .network import ShiftedReLUNet
    if not isinstance(net, ShiftedReLUNet):
        raise InputTypeError(f"net must be a ShiftedReLUNet, got {type(net).__name__}")
    dtype = torch.float64 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(f"dtype must be a floating torch dtype, got {dtype!r}")

    class ShiftedReLUModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("W", torch.tensor(net.W, dtype=dtype))
            self.register_buffer("a", torch.tensor(net.a, dtype=dtype))
            self.b = float(net.b)
            self.scale = float(net.scale)
            self.logits = bool(logits)

        def forward(self, x):
            x = x.to(self.W.dtype).reshape(x.shape[0], -1)
            f = torch.relu(x @ self.W.T - self.b) @ self.a * self.scale
            return torch.stack([-f, f], dim=1) if self.logits else f

        def extra_repr(self):
            return f"m={self.W.shape[0]}, d={self.W.shape[1]}, b={self.b:.6g}, logits={self.logits}"

    return ShiftedReLUModule()
