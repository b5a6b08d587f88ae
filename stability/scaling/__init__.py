"""Coordinate checks: does a model's scale survive width and depth (muP, Depth-muP, CompleteP)?

``exponents`` the expected slopes (one table), ``roles`` which parameter is input, hidden,
output or vector-like, ``parametrize`` the parameterisations' init, multipliers and per-group
optimiser settings, ``mlp`` the built-in residual MLP, ``measure`` a few training steps with
per-module figures, ``fit`` log-log slopes and verdicts, ``run`` the loop over widths,
depths and seeds, ``baseline`` a user's exponents kept and judged.
"""
