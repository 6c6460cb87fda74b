import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The user's real cache (the SmolLM2 model lives there); tests write everything else elsewhere.
USER_CACHE = os.environ.get("MEMIT_CACHE") or str(Path.home() / ".cache" / "memit")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    old = os.environ.get("MEMIT_CACHE")
    os.environ["MEMIT_CACHE"] = str(tmp_path_factory.mktemp("memit-cache"))
    yield
    if old is None:
        os.environ.pop("MEMIT_CACHE", None)
    else:
        os.environ["MEMIT_CACHE"] = old


@pytest.fixture(scope="session")
def bpe():
    from helpers import make_tokenizer

    return make_tokenizer("bpe")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    from helpers import CORPUS

    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(CORPUS * 3))
    return str(path)


def shared_file(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"needs ../shared/{rel} (the benchmark data beside the checkout); not present here")
    return path


def real_model(name: str):
    """A real model (``smollm2-135m``, ``gemma3-270m``), fetched and converted once per user into
    the user's own cache, not the test's private one; the test skips, saying why, where it cannot be."""
    import memit
    from memit.models.loading import ModelLoadError

    private = os.environ["MEMIT_CACHE"]
    os.environ["MEMIT_CACHE"] = USER_CACHE
    try:
        return memit.load_model(name)
    except ModelLoadError as e:
        pytest.skip(f"{name} not available: {e}")
    finally:
        os.environ["MEMIT_CACHE"] = private
