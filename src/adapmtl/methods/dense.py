"""``dense``: no pruning; the reference model of the normalised score Delta_T."""

from adapmtl.methods.base import METHODS, Method


@METHODS.register("dense")
class Dense(Method):
    name = "dense"
