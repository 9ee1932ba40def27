"""Shared hypothesis strategies (manifolds, dtypes, seeds)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere

DTYPES = (torch.float64, torch.float32)

seeds = st.integers(min_value=0, max_value=2**31 - 1)
dtypes = st.sampled_from(DTYPES)
batch_sizes = st.integers(min_value=1, max_value=6)


def _leaf(max_dim: int) -> st.SearchStrategy[Manifold]:
    d = st.integers(min_value=1, max_value=max_dim)
    return st.one_of(
        d.map(Euclidean),
        d.map(Sphere),
        d.map(FlatTorus),
        st.just(SO3()),
    )


def manifolds(max_dim: int = 4, products: bool = True) -> st.SearchStrategy[Manifold]:
    """Library manifolds with small dimensions, optionally products of two or three factors."""
    leaf = _leaf(max_dim)
    if not products:
        return leaf
    prod = st.lists(leaf, min_size=1, max_size=3).map(lambda ms: Product(*ms))
    return st.one_of(leaf, prod)


def compact_manifolds(max_dim: int = 4) -> st.SearchStrategy[Manifold]:
    """Manifolds of finite volume (those with a uniform distribution)."""
    d = st.integers(min_value=1, max_value=max_dim)
    leaf = st.one_of(d.map(Sphere), d.map(FlatTorus), st.just(SO3()))
    return st.one_of(leaf, st.lists(leaf, min_size=2, max_size=2).map(lambda ms: Product(*ms)))
