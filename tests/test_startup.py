"""Start-up: `vdcnn --help` and reading settings cost no torch import."""

from __future__ import annotations

import subprocess
import sys


def test_help_imports_no_torch():
    code = ("import sys; from vdcnn.cli.main import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'train' in r.output; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_model_config_is_the_same_class_everywhere():
    from vdcnn import config, model, model_config

    assert model.ModelConfig is model_config.ModelConfig is config.ModelConfig
