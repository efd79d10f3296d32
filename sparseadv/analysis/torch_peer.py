"""The outside peer: the same adversarial iteration as a PyTorch user would write it on CPU.

Autograd PGD on each example's loss ½(f(x) − y)² (l2 or l∞ steps as ``sparseadv.PGD``,
projection onto the ball), then ``loss.backward()`` and a ``torch.optim.SGD`` step on the
full-batch loss ½ mean (f − y)², with f(x) = m^{-1/2} Σ_r a_r relu(⟨w_r, x⟩ − b), dense
matrices throughout (``inner_products`` counts the (steps + 1) n·m scores it multiplies),
float32 or float64. Needs the optional ``torch``; imported on use.
"""
import numpy as np


class TorchIteration:
    """``step()`` trains a float32/float64 copy of ``net``'s weights on (X, y); ``weights()``
    returns them as a float64 array."""

    def __init__(self, net, X, y, attack, lr, dtype="float64"):
        import torch
        self.torch = torch
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[str(dtype)]
        kw = dict(dtype=self.dtype)
        self.W = torch.tensor(net.W, **kw).requires_grad_(True)
        self.a = torch.tensor(net.a, **kw)
        self.b, self.scale = float(net.b), float(net.scale)
        self.X, self.y = torch.tensor(np.asarray(X), **kw), torch.tensor(np.asarray(y), **kw)
        self.eps, self.steps, self.alpha = attack.eps, attack.steps, attack.step_size
        self.linf = attack.norm == np.inf
        self.opt = torch.optim.SGD([self.W], lr=float(lr))

    def _f(self, X):
        return self.scale * (self.torch.relu(X @ self.W.T - self.b) @ self.a)

    def step(self):
        torch = self.torch
        delta = torch.zeros_like(self.X)
        W = self.W.detach()
        for _ in range(self.steps):
            delta.requires_grad_(True)
            f = self.scale * (torch.relu((self.X + delta) @ W.T - self.b) @ self.a)
            g, = torch.autograd.grad(0.5 * ((f - self.y) ** 2).sum(), delta)
            with torch.no_grad():
                if self.linf:
                    delta = (delta + self.alpha * g.sign()).clamp(-self.eps, self.eps)
                else:
                    gn = g.norm(dim=1, keepdim=True)
                    delta = delta + self.alpha * g / torch.where(gn > 0, gn, torch.ones_like(gn))
                    dn = delta.norm(dim=1, keepdim=True)
                    delta = delta * torch.where(dn > self.eps, self.eps / dn,
                                                torch.ones_like(dn))
        self.opt.zero_grad()
        loss = 0.5 * ((self._f(self.X + delta.detach()) - self.y) ** 2).mean()
        loss.backward()
        self.opt.step()
        # every pass multiplies the full (n x m) score matrix: steps + 1 of them
        n, m = self.X.shape[0], self.W.shape[0]
        return {"loss": float(loss.detach()), "inner_products": n * m * (self.steps + 1)}

    def weights(self):
        return self.W.detach().to(self.torch.float64).numpy().copy()
