"""Dependency audit (issue 8): no installed package in a version with a known advisory that
touches how llmos uses it. pip-audit cannot reach an advisory database from these machines,
so the table is kept here; add a row when an advisory lands."""

from importlib import metadata

import pytest
from packaging.version import Version

# package -> (first fixed version, why it matters to llmos)
MINIMUM = {
    "torch": ("2.6.0", "CVE-2025-32434: torch.load(weights_only=True) could still run code"),
    "starlette": ("0.40.0", "CVE-2024-47874: unbounded multipart form fields (server DoS)"),
    "urllib3": ("2.5.0", "CVE-2025-50181: redirects not disabled when asked"),
    "requests": ("2.32.4", "CVE-2024-47081: .netrc credentials leak to other hosts"),
}


@pytest.mark.parametrize("package", sorted(MINIMUM))
def test_no_known_vulnerable_version_is_installed(package):
    fixed, why = MINIMUM[package]
    try:
        installed = metadata.version(package)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed")
    assert Version(installed).release >= Version(fixed).release, (
        f"{package} {installed} < {fixed}: {why}"
    )


def test_pyproject_keeps_torch_on_a_fixed_version():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (torch_req,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch")]
    pinned = torch_req.split("==")[1]
    assert Version(pinned) >= Version(MINIMUM["torch"][0])
