"""A minimal PEP 517 build backend for the `sutra` package (standard library only).

It writes a wheel of the sutra/ folder: its .py files, and a libsutra.so / libsutra.dylib /
sutra.dll found there (copied in before `pip install` to bundle the library; the wheel is
then tagged for this platform instead of py3-none-any). The name and version come from
pyproject.toml. No setuptools or `wheel` package is needed, so `pip install ./bindings/python`
works offline, with or without `--no-build-isolation`.
"""

import base64
import hashlib
import os
import re
import sysconfig
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "sutra"
LIBRARIES = ("libsutra.so", "libsutra.dylib", "sutra.dll", "libsutra.dll")


def _project():
    with open(os.path.join(HERE, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    try:
        import tomllib

        p = tomllib.loads(text)["project"]
        return p["name"], p["version"], p.get("description", ""), p.get("requires-python", "")
    except ImportError:  # Python < 3.11: the four plain lines of [project]
        def field(k):
            m = re.search(rf'^{k}\s*=\s*"([^"]*)"', text, re.M)
            return m.group(1) if m else ""

        return field("name"), field("version"), field("description"), field("requires-python")


def _files():
    """(path in the wheel, path on disk) of the package, and whether a library is bundled."""
    out, native = [], False
    src = os.path.join(HERE, PACKAGE)
    for name in sorted(os.listdir(src)):
        full = os.path.join(src, name)
        if name.endswith(".py") or name in LIBRARIES:
            out.append((f"{PACKAGE}/{name}", full))
            native |= name in LIBRARIES
    return out, native


def _metadata():
    name, version, summary, requires = _project()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if summary:
        lines.append(f"Summary: {summary}")
    if requires:
        lines.append(f"Requires-Python: {requires}")
    return name, version, "\n".join(lines) + "\n"


def _tag(native):
    if not native:
        return "py3-none-any"
    plat = re.sub(r"[^A-Za-z0-9]", "_", sysconfig.get_platform())
    return f"py3-none-{plat}"


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings=None):
    """Nothing beyond the standard library."""
    return []


def get_requires_for_build_sdist(config_settings=None):
    """Nothing beyond the standard library."""
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Writes sutra-VERSION-TAG.whl into wheel_directory; returns its file name."""
    name, version, metadata = _metadata()
    files, native = _files()
    tag = _tag(native)
    dist_info = f"{name}-{version}.dist-info"
    wheel_meta = (
        "Wheel-Version: 1.0\nGenerator: _sutra_build\n"
        f"Root-Is-Purelib: {'false' if native else 'true'}\nTag: {tag}\n"
    )
    filename = f"{name}-{version}-{tag}.whl"
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for arcname, full in files:
            with open(full, "rb") as f:
                data = f.read()
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if arcname.endswith(LIBRARIES) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            records.append(_record_line(arcname, data))
        for base, text in (("METADATA", metadata), ("WHEEL", wheel_meta)):
            arcname = f"{dist_info}/{base}"
            z.writestr(arcname, text)
            records.append(_record_line(arcname, text.encode()))
        records.append(f"{dist_info}/RECORD,,")
        z.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return filename


def build_sdist(sdist_directory, config_settings=None):
    """Writes sutra-VERSION.tar.gz (pyproject.toml, this backend, the package sources)."""
    name, version, metadata = _metadata()
    base = f"{name}-{version}"
    filename = f"{base}.tar.gz"
    files, _ = _files()
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as t:
        for rel in ("pyproject.toml", "_sutra_build.py"):
            t.add(os.path.join(HERE, rel), f"{base}/{rel}")
        for arcname, full in files:
            if not arcname.endswith(LIBRARIES):
                t.add(full, f"{base}/{arcname}")
        pkg_info = os.path.join(sdist_directory, f".{base}.PKG-INFO")
        with open(pkg_info, "w", encoding="utf-8") as f:
            f.write(metadata)
        t.add(pkg_info, f"{base}/PKG-INFO")
        os.remove(pkg_info)
    return filename
