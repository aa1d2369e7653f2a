"""The library stands alone: importing it needs neither MLflow nor a web framework."""

from __future__ import annotations

import subprocess
import sys


def test_import_latent_ode_without_mlflow_or_fastapi() -> None:
    code = (
        "import sys\n"
        "for name in ('mlflow', 'fastapi', 'pydantic', 'uvicorn', 'pandas'):\n"
        "    sys.modules[name] = None  # makes `import name` raise ImportError\n"
        "import latent_ode\n"
        "from latent_ode import Forecaster, fit, evaluate\n"
        "assert not any(m.split('.')[0] in ('mlflow', 'fastapi', 'uvicorn') for m in sys.modules"
        " if sys.modules[m] is not None)\n"
        "print(len(latent_ode.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 20


def test_public_api_is_declared() -> None:
    import latent_ode

    for name in latent_ode.__all__:
        assert hasattr(latent_ode, name), name
