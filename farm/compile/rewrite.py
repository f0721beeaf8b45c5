"""Binding-by-binding rewrites of Relax functions: the frame shared by the int8 lowering, the TFLite
normalization and the channel blocking.

A rewrite is a plain object whose `binding` sees each var binding of a function in order and returns
whether it bound the new value itself; if not, TVM's mutator copies the binding with its vars
remapped. TVM is imported only when a rewrite runs, as everywhere in farm.
"""

from __future__ import annotations

import functools

import numpy as np


def op_name(e) -> str:
    """The name of the Relax op `e` calls ("" if e is not a call of an op)."""
    import tvm
    from tvm import relax

    return e.op.name if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else ""


def is_op(e, name: str) -> bool:
    return op_name(e) == name


def is_const(e) -> bool:
    import tvm

    return isinstance(e, tvm.ir.expr.Constant)  # relax constants live in tvm.ir in 0.27


def const_np(e) -> np.ndarray | None:
    return e.value.numpy() if is_const(e) else None


def bindings(func) -> dict:
    """var → bound value, for every var binding of a function."""
    from tvm import relax

    defs = {}
    if isinstance(func.body, relax.SeqExpr):
        for block in func.body.blocks:
            for b in block.bindings:
                if isinstance(b, relax.VarBinding):
                    defs[b.var] = b.value
    return defs


class Rewrite:
    """Base of a rewrite of one function, whose bindings are `defs`. While it runs, `mutator` is the
    TVM mutator (its builder_, visit_expr, set_var_remap)."""

    def __init__(self, defs: dict):
        self.defs = defs
        self.mutator = None

    def binding(self, binding) -> bool:
        """Rewrite one var binding; False leaves it to the mutator's default copy."""
        raise NotImplementedError

    @property
    def bb(self):
        return self.mutator.builder_

    def visit(self, e):
        """e as an expression of the new function."""
        return self.mutator.visit_expr(e)

    def val(self, e):
        """The value bound to e in the original function, through var-to-var bindings."""
        from tvm import relax

        while isinstance(e, relax.Var) and e in self.defs:
            e = self.defs[e]
        return e

    def emit_as(self, var, value) -> None:
        """Bind `value` under the name of `var`, as a dataflow var or an output like var, and use it
        for var from now on."""
        from tvm import relax

        emit = self.bb.emit if isinstance(var, relax.DataflowVar) else self.bb.emit_output
        self.mutator.set_var_remap(var, emit(value, name_hint=var.name))


def mutator(mod, rewrite: Rewrite):
    """A TVM mutator of `mod` that hands each var binding to `rewrite`. Keep it while the rewrite
    runs: the rewrite holds only the mutator's Python half."""
    return _mutator_class()(mod, rewrite)


def rewrite_functions(mod, make):
    """(global var, new function, its rewrite) for each Relax function of `mod`, each rewritten by a
    fresh `make(bindings)`."""
    from tvm import relax

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewrite = make(bindings(func))
            m = mutator(mod, rewrite)
            yield gv, m.visit_expr(func), rewrite


@functools.cache
def _mutator_class():
    # @relax.expr_functor.mutator needs TVM to define the class, so it is defined at the first rewrite
    # (importing farm does not import TVM); it only forwards bindings, the logic is in the Rewrite.
    from tvm import relax

    @relax.expr_functor.mutator
    class BindingMutator(relax.PyExprMutator):
        def __init__(self, mod, rewrite: Rewrite):
            super().__init__(mod)
            self.rewrite = rewrite
            rewrite.mutator = self

        def visit_var_binding_(self, binding) -> None:
            if not self.rewrite.binding(binding):
                super().visit_var_binding_(binding)

    return BindingMutator
