"""Makes the checkout's `jtrain` importable when the tests run without installing the package."""

import os
import sys

import pytest

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

# The suite runs on CPU devices (fake ones for meshes). With the `tpu` extra installed, JAX would otherwise
# initialise libtpu in every process: each takes libtpu's lock file and may log to stderr, which the one-line
# error tests count. `jtrain plan --topology` loads libtpu itself.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
    """A TFDS data dir private to this test session, with `digits` prepared once (about a second)."""
    from jtrain.data import registry  # imported here: TFDS is slow to import and most tests don't need it

    path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    registry.prepare("digits", path)
    return path
