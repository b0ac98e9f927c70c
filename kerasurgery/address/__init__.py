"""Addresses: how a point of a model is named.

- `kerasurgery.address.grammar`: parsing and formatting (pure strings);
- `kerasurgery.address.selector`: selectors (address, glob, list,
  predicate), the one normalisation every ``points=`` argument goes through.

Resolving an address against a model's graph is `kerasurgery.ir.resolve`.
"""
