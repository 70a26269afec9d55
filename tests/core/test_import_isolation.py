import subprocess
import sys


def test_core_imports_no_heavy_packages():
    code = (
        "import sys, terramask.core, terramask.core.rle, terramask.core.frames, terramask.core.boxes;"
        "heavy = [m for m in ('torch', 'rasterio', 'fastapi', 'click', 'segment_anything', 'onnxruntime', 'ray')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_optional_dependency_names_install_command():
    from terramask.core.errors import MissingDependencyError
    from terramask.core.lazy import require

    try:
        require("terramask_no_such_module", extra="sam", package="no-such-pkg")
    except MissingDependencyError as exc:
        assert "pip install 'terramask[sam]'" in str(exc)
        assert isinstance(exc, ImportError)
    else:  # pragma: no cover
        raise AssertionError("expected MissingDependencyError")
