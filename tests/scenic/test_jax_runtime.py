"""The CPU backend flag is set only where XLA knows it (it aborts on unknown flags)."""

from __future__ import annotations

import os
import subprocess
import sys

from owlvit_cli.scenic.jax_runtime import LAZY_FUSIONS_OFF, cpu_flags, jaxlib_version


def test_flag_added_for_known_jaxlib_only():
    assert cpu_flags("", (0, 10)) == LAZY_FUSIONS_OFF
    assert cpu_flags("--xla_foo=1", (0, 10)) == f"--xla_foo=1 {LAZY_FUSIONS_OFF}"
    assert cpu_flags("", (0, 11)) == "" and cpu_flags("", None) == ""


def test_a_users_own_setting_wins():
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot"
    assert cpu_flags(mine, (0, 10)) == mine


def test_the_flax_model_runs_with_the_flag_in_a_fresh_process():
    """A fresh interpreter: the flag reaches the backend, which starts and computes."""
    code = (
        "import os, numpy as np\n"
        "from owlvit_cli.scenic.flax_model import FlaxRunner, dummy_inputs\n"
        "from owlvit_cli.model.tree import nest\n"
        "from owlvit_cli.testing.fixtures import random_params\n"
        "from owlvit_cli.model.spec import VARIANTS\n"
        "spec = VARIANTS['v1-tiny']\n"
        "runner = FlaxRunner(spec, nest(random_params(spec, 0)))\n"
        "out = runner.detect(*map(np.asarray, dummy_inputs(spec)))\n"
        "print(os.environ.get('XLA_FLAGS', ''), out['pred_logits'].shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = LAZY_FUSIONS_OFF if jaxlib_version() == (0, 10) else ""
    assert proc.stdout.split("(")[0].strip() == expected.strip()
