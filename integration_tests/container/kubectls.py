"""The kubectl binaries that render deploy/kubernetes in the tests.

The manifests must render the same objects with two generations of
kustomize: the current one (in kubectl 1.21 and later) and v2.0.3, the
kustomize inside kubectl 1.20, which is the only kubectl Debian 12 ships
(package kubernetes-client). kubectls() returns the kubectls to render with:

  - the kubectl on PATH;
  - Debian 12's kubectl 1.20: the PATH one when it is that package's, else
    the package's binary unpacked (`apt-get download` and `dpkg-deb -x`,
    nothing installed, /usr/bin/kubectl untouched) into
    ~/.cache/pyexec/kubectl-<package version>/, once per version.

On a machine whose only kubectl is Debian's, the two are the same binary
and kubectls() returns it once.

Run with Debian's /usr/bin/python3.
"""

import json
import os
import shutil
import subprocess
import tempfile

import yaml

DEBIAN_PACKAGE = "kubernetes-client"
CACHE = os.path.join(os.path.expanduser("~"), ".cache/pyexec")


def _run(cmd, **kwargs):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    if out.returncode != 0:
        raise RuntimeError("%s: exit %d\n%s%s" % (" ".join(cmd), out.returncode, out.stdout,
                                                  out.stderr))
    return out.stdout


def _debian_version():
    """The kubernetes-client version apt would install here."""
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", DEBIAN_PACKAGE],
                         capture_output=True, text=True, timeout=60)
    for line in out.stdout.splitlines():
        if line.startswith("Version: "):
            return line.split(None, 1)[1]
    raise RuntimeError("apt knows no %s package (Debian 12; run apt-get update?)\n%s"
                       % (DEBIAN_PACKAGE, out.stderr))


def _owned_by_debian_package(path):
    out = subprocess.run(["dpkg-query", "-S", os.path.realpath(path)], capture_output=True,
                         text=True, timeout=30)
    return out.returncode == 0 and out.stdout.startswith(DEBIAN_PACKAGE + ":")


def debian_kubectl():
    """Debian 12's kubectl (1.20, kustomize v2.0.3), unpacked into the cache
    on first use."""
    on_path = shutil.which("kubectl")
    if on_path and _owned_by_debian_package(on_path):
        return on_path
    version = _debian_version()
    root = os.path.join(CACHE, "kubectl-" + version)
    binary = os.path.join(root, "usr/bin/kubectl")
    if os.access(binary, os.X_OK):
        return binary
    os.makedirs(CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="kubectl-download-", dir=CACHE)
    try:
        # apt's download sandbox user must be able to write here.
        os.chmod(tmp, 0o755)
        _run(["apt-get", "download", "-q", "%s=%s" % (DEBIAN_PACKAGE, version)], cwd=tmp)
        (deb,) = [n for n in os.listdir(tmp) if n.endswith(".deb")]
        unpacked = os.path.join(tmp, "root")
        _run(["dpkg-deb", "-x", os.path.join(tmp, deb), unpacked])
        if not os.access(os.path.join(unpacked, "usr/bin/kubectl"), os.X_OK):
            raise RuntimeError("%s has no usr/bin/kubectl" % deb)
        try:
            os.rename(unpacked, root)
        except OSError:  # another run unpacked it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def version(kubectl):
    """The client's gitVersion, e.g. "v1.20.2"."""
    out = _run([kubectl, "version", "--client", "-o", "json"])
    return json.loads(out)["clientVersion"]["gitVersion"]


def kubectls():
    """[(label, path)]: the kubectl on PATH first, then Debian 12's kubectl
    1.20 when it is another binary."""
    on_path = shutil.which("kubectl")
    if on_path is None:
        raise RuntimeError("kubectl not found: install kubernetes-client (scripts/install_deps.sh)")
    found = [on_path]
    debian = debian_kubectl()
    if os.path.realpath(debian) != os.path.realpath(on_path):
        found.append(debian)
    return [("kubectl %s (%s)" % (version(k), k), k) for k in found]


def render(kubectl, path):
    """The objects `kubectl kustomize PATH` renders, in its order."""
    out = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError("%s kustomize %s failed:\n%s" % (kubectl, path, out.stderr))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def canonical(docs):
    """The objects as a sorted list of canonical JSON texts: equal for two
    renders of the same objects, whatever order or YAML style each printed."""
    return sorted(json.dumps(d, sort_keys=True) for d in docs)
