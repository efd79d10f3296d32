"""asv: the PGD attack alone, per engine (the attack is K of the K + 2 passes of an iteration).

``bench_dense.Attack`` times the public ``PGD.perturb`` (dense gradients only); this times the
attack through each engine in the registry, after ``begin_iteration`` (where a sparse engine
builds its candidate sets or tree, which is not part of the attack). Engines missing from a
commit are skipped (n/a).

Every timed call is a fresh attack: the certified engine's first pass after
``begin_iteration`` evaluates the anchored sets and refines them, later passes use the refined
sets, so a second ``perturb`` without a new ``begin_iteration`` would time something else.
Hence ``common.OneCall`` (``number = 1``, ``warmup_time = 0``): asv runs ``setup`` (which calls
``begin_iteration``) before every sample, and each sample is exactly one ``perturb``, the same
sequence that ``track_attack_inner_products`` counts; the attack is ``PGD.run`` (the loop
alone), since ``perturb`` begins an iteration itself.
"""
from .common import ENGINE_NAMES, LARGE, OneCall, problem, require_engine

SIZES = [(4096, 256, 16), (16384, 256, 16)] + ([(65536, 1024, 64)] if LARGE else [])


class AttackEngines(OneCall):
    # one perturb per sample, no untimed calls in between: setup precedes every sample
    params = [ENGINE_NAMES, SIZES, [3]]
    param_names = ["engine", "m_n_d", "steps"]

    def setup(self, engine, size, steps):
        require_engine(engine)
        from sparseadv import PGD
        from sparseadv.engines import make_engine
        m, n, d = size
        self.net, self.X, self.y = problem(m, n, d)
        self.attack = PGD(0.05, steps)
        self.engine = make_engine(engine, self.net)
        self.engine.begin_iteration(self.X, self.y, self.attack)

    def _attack(self):
        # PGD.run is the attack loop alone (perturb also begins an iteration, since 2803718);
        # older commits have only perturb, which then did not begin one
        run = getattr(self.attack, "run", None)
        if run is not None:
            run(self.X, self.y, self.engine)
        else:
            self.attack.perturb(self.net, self.X, self.y, self.engine)

    def time_attack(self, engine, size, steps):
        self._attack()

    def track_attack_inner_products(self, engine, size, steps):
        # setup has just run begin_iteration: count the same single attack that time_ times
        before = self.engine.counters["inner_products"]
        self._attack()
        return self.engine.counters["inner_products"] - before

    track_attack_inner_products.unit = "inner products"
