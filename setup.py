"""Install tvm-mcpruner: the tvm_mcpruner, relay_passes and topi_sparse packages + the CLI."""

from pathlib import Path

from setuptools import setup

here = Path(__file__).parent
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]
# The runtime needs these; pytest/hypothesis/nbmake/ipykernel are for the tests.
_TEST_ONLY = ("pytest", "hypothesis", "nbmake", "nbformat", "nbclient", "ipykernel")
install_requires = [r for r in requirements if not r.startswith(_TEST_ONLY)]
tests_require = [r for r in requirements if r.startswith(_TEST_ONLY)]

setup(
    name="tvm-mcpruner",
    version="0.1.0",
    description=(
        "Pattern + connectivity pruning aligned to the vector width, compiled into fast "
        "sparse kernels by Apache TVM (MCPruner / PatDNN on TVM 0.27)"
    ),
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["tvm_mcpruner", "tvm_mcpruner.pruning", "tvm_mcpruner.tuning_log", "relay_passes", "topi_sparse"],
    install_requires=install_requires,
    extras_require={"test": tests_require},
    entry_points={"console_scripts": ["mcpruner = tvm_mcpruner.cli:main"]},
)
