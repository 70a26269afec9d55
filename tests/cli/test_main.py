import subprocess
import sys

from terramask.cli.main import SUBCOMMANDS


def test_help_lists_available_commands(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for name in ("predict", "models"):
        assert name in out


def test_every_registered_subcommand_imports_and_has_help(run_cli):
    import importlib.util

    for name, (module, _) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is None:
            continue
        code, out, err = run_cli(name, "--help")
        assert code == 0, (name, err)
        assert "Usage:" in out


def test_unknown_command_is_a_usage_error(run_cli):
    code, _, err = run_cli("frobnicate")
    assert code == 2 and "No such command" in err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "terramask", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "0.1.0" in out.stdout
