"""Shared fixtures: a private cache and output dir per test, the fake engine and the fake encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shortgen.cache import Cache
from shortgen.testing import FakeEncoder, FakeEngine

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def private_default_cache(tmp_path_factory, monkeypatch) -> None:
    """A test that names no cache directory still never writes to the user's ~/.cache."""
    monkeypatch.setenv("SHORTGEN_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))


@pytest.fixture
def layer(tmp_path: Path) -> dict:
    """Settings from the 'command line' that keep every test's cache and output private."""
    return {"cache_dir": tmp_path / "cache", "output_dir": tmp_path / "out"}


@pytest.fixture
def cache(layer) -> Cache:
    return Cache(layer["cache_dir"])


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def short_script(tmp_path: Path) -> Path:
    """A private copy of the short fixture episode, safe to edit."""
    dst = tmp_path / "scripts" / "short.yaml"
    dst.parent.mkdir()
    shutil.copy(FIXTURES / "short.yaml", dst)
    return dst
