"""Runs the pyexec image as the Kubernetes manifests run it, under podman.

What the kubelet and the container runtime would do with the rendered
Deployment (`kubectl kustomize deploy/kubernetes`) is translated to podman:

  runAsUser/runAsGroup        --user UID:GID
  fsGroup                     --group-add GID, and the group of the volumes
  readOnlyRootFilesystem      --read-only --read-only-tmpfs=false (no /run,
                              /tmp or /var/tmp tmpfs that a pod would not have)
  capabilities.drop [ALL]     --cap-drop=ALL
  allowPrivilegeEscalation    --security-opt=no-new-privileges
  seccompProfile RuntimeDefault  podman's default profile (no flag)
  terminationGracePeriodSeconds  --stop-timeout (SIGTERM, then SIGKILL)
  env (POD_IP)                --env, with the pod's IP as 127.0.0.1
  emptyDir on /tmp            a host directory, mode 2777 and group fsGroup,
                              as the kubelet leaves an emptyDir
  the Secret pyexec-auth      a host directory laid out as the kubelet's
                              AtomicWriter lays out a Secret volume (below),
                              mounted read-only

and pyexecd's arguments are the manifest's, with only what a pod gets from
its cluster replaced: the wildcard listen hosts become 127.0.0.1 (the
container shares the host's network, --network=host, so that no iptables
rule is needed), the manifest's ports become free ones, $(POD_IP) becomes
127.0.0.1 and the dns:/// peers become the static list of the containers
started together.

A Secret volume as the kubelet writes it (pkg/volume/util/atomic_writer.go,
then SetVolumeOwnership for a read-only volume):
  auth/                        root:fsGroup, 3777 (the tmpfs root, setgid)
  auth/..2026_01_02_03_04_05.123456789/     root:fsGroup 2755
  auth/..2026_.../tokens       root:fsGroup, defaultMode | 0440
  auth/..data -> ..2026_...    the symlink swapped on every update
  auth/tokens -> ..data/tokens

Used by run_container_tests.sh (`start` and `stop` below, as a command) and
by tests that restart the container: Target.from_env() returns the container
the harness started (PYEXEC_TEST_CONTAINER_STATE); start(), stop(), kill(),
restart() and logs() act on it. Target.like(other, name) makes a second
container of the same image, pod and Secret, with ports of its own; for two
replicas that forward to each other, give both the same peers before
(re)starting them:
    b = Target.like(a, "b"); a.peers = b.peers = [a.address, b.address]
    a.restart(); b.start()

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-yaml).
"""

import argparse
import datetime
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import grpc
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUSTOMIZE_DIR = os.path.join(REPO, "deploy/kubernetes")
# crun refuses this machine's mix of cgroup v1 controllers; runc runs.
PODMAN = shlex.split(os.environ.get("PODMAN", "podman --runtime runc"))
STATE_ENV = "PYEXEC_TEST_CONTAINER_STATE"
LOOPBACK = "127.0.0.1"


def podman(*args, check=True, timeout=120):
    out = subprocess.run(PODMAN + list(args), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError("podman %s: exit %d\n%s" % (" ".join(args[:2]), out.returncode,
                                                       out.stderr.strip()))
    return out


def render(path=KUSTOMIZE_DIR):
    """The objects `kubectl kustomize PATH` renders."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl not found (scripts/install_deps.sh installs one)")
    out = subprocess.run([kubectl, "kustomize", path], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _quantity_bytes(text):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    if not m:
        raise ValueError("unexpected quantity %r" % text)
    scale = {None: 1, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
             "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}[m.group(2)]
    return int(m.group(1)) * scale


class Pod:
    """What the Deployment asks of the pyexecd container, from the rendered manifest."""

    def __init__(self, docs):
        (deployment,) = [d for d in docs if d.get("kind") == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == "pyexecd"]
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        self.args = list(c.get("args", []))
        self.uid = csc.get("runAsUser", psc.get("runAsUser"))
        self.gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        self.fs_group = psc.get("fsGroup")
        self.read_only_root = bool(csc.get("readOnlyRootFilesystem"))
        self.drop_all = csc.get("capabilities", {}).get("drop") == ["ALL"]
        self.no_new_privs = csc.get("allowPrivilegeEscalation") is False
        self.seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        self.grace_s = pod.get("terminationGracePeriodSeconds", 30)
        self.env_names = [e["name"] for e in c.get("env", [])]
        self.ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        probe = c.get("readinessProbe", {}).get("grpc", {})
        self.readiness_service = probe.get("service", "")
        self.readiness_port = probe.get("port")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        self.secrets = {}   # mount path -> (secret name, defaultMode)
        self.empty_dirs = {}  # mount path -> sizeLimit in bytes (None: none)
        for m in c.get("volumeMounts", []):
            v = volumes[m["name"]]
            if "secret" in v:
                self.secrets[m["mountPath"]] = (v["secret"]["secretName"],
                                                v["secret"].get("defaultMode", 0o644))
            elif "emptyDir" in v:
                limit = v["emptyDir"].get("sizeLimit")
                self.empty_dirs[m["mountPath"]] = _quantity_bytes(limit) if limit else None
            else:
                raise ValueError("no podman translation for volume %r" % m["name"])
        if self.seccomp != "RuntimeDefault":
            raise ValueError("the manifest's seccomp profile %r has no podman translation"
                             % self.seccomp)

    def podman_flags(self):
        """The securityContext as podman flags."""
        flags = ["--user=%d:%d" % (self.uid, self.gid)]
        if self.fs_group is not None:
            flags.append("--group-add=%d" % self.fs_group)
        if self.read_only_root:
            flags += ["--read-only", "--read-only-tmpfs=false"]
        if self.drop_all:
            flags.append("--cap-drop=ALL")
        if self.no_new_privs:
            flags.append("--security-opt=no-new-privileges")
        flags.append("--stop-timeout=%d" % self.grace_s)
        return flags


def write_secret_volume(path, files, default_mode, fs_group):
    """Lays out files ({name: bytes}) at path as the kubelet does a Secret volume."""
    os.makedirs(path)
    stamp = datetime.datetime.utcnow().strftime("..%Y_%m_%d_%H_%M_%S.") + str(random.randrange(10 ** 9))
    data = os.path.join(path, stamp)
    os.mkdir(data)
    os.chmod(data, 0o755)
    for name, content in files.items():
        f = os.path.join(data, name)
        with open(f, "wb") as out:
            out.write(content)
        os.chmod(f, default_mode)
    os.symlink(stamp, os.path.join(path, "..data"))
    for name in files:
        os.symlink(os.path.join("..data", name), os.path.join(path, name))
    os.chmod(path, 0o1777)  # the volume's tmpfs root
    if fs_group is not None:
        # SetVolumeOwnership of a read-only volume: group fsGroup, and
        # group read (directories: and search, and setgid) on top of the mode.
        for p in (path, data) + tuple(os.path.join(data, n) for n in files):
            os.chown(p, 0, fs_group)
            mode = os.stat(p).st_mode & 0o7777
            os.chmod(p, mode | (0o2550 if os.path.isdir(p) else 0o440))


def make_empty_dir(path, fs_group):
    """An emptyDir as the kubelet leaves it: 0777, and with fsGroup its group and setgid."""
    os.makedirs(path)
    os.chmod(path, 0o777)
    if fs_group is not None:
        os.chown(path, 0, fs_group)
        os.chmod(path, 0o2777)


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def health_status(address, service, timeout=2.0):
    """grpc.health.v1 Check on a plaintext address: the status number, or None.

    Hand-encoded (HealthCheckRequest{service}: field 1; the response's status:
    field 1, a varint), so that this needs no generated stubs.
    """
    request = b"\x0a" + bytes([len(service)]) + service.encode() if service else b""
    try:
        with grpc.insecure_channel(address) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            response = check(request, timeout=timeout)
    except grpc.RpcError:
        return None
    return response[1] if response[:1] == b"\x08" else 0


SERVING = 1


def _host_ulimits():
    """--ulimit flags within what this process may grant: podman's defaults
    (nofile 1048576, nproc 4194304) exceed the hard limits of a process
    without CAP_SYS_RESOURCE, and runc then cannot start the container."""
    import resource
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    return ["--ulimit=nofile=%d:%d" % (nofile, nofile), "--ulimit=nproc=%d:%d" % (nproc, nproc)]


class Target:
    """One container of the image, run as the manifest runs pyexecd.

    State lives in a JSON file (state_path) so that a test process can act
    on a container that run_container_tests.sh started.
    """

    def __init__(self, image, name, workdir, pod_dir=KUSTOMIZE_DIR, ports=None,
                 peers=None, secret_dirs=None, extra_args=()):
        self.image = image
        self.name = name
        self.workdir = workdir
        self.pod_dir = pod_dir
        pod = Pod(render(pod_dir))
        # The manifest's ports (gRPC, metrics, health), each moved to a free one.
        self.ports = ports or {str(p): free_port() for p in pod.ports.values()}
        self.grpc_port = self.ports[str(pod.ports["grpc"])]
        self.address = "%s:%d" % (LOOPBACK, self.grpc_port)
        # Where the kubelet's probes go (a plaintext health port under mTLS).
        self.probe_address = "%s:%d" % (LOOPBACK, self.ports[str(pod.readiness_port)])
        self.peers = peers or [self.address]
        # The Secret volumes: {mount path: host directory laid out by
        # write_secret_volume}, one for each of the pod's.
        self.secret_dirs = dict(secret_dirs or {})
        self.extra_args = list(extra_args)
        self.state_path = os.path.join(workdir, name + ".json")
        self._pod = pod

    # -- state handed from the harness to the tests

    def save(self):
        state = {k: getattr(self, k) for k in
                 ("image", "name", "workdir", "pod_dir", "ports", "peers", "secret_dirs",
                  "extra_args")}
        with open(self.state_path, "w") as f:
            json.dump(state, f)
        return self.state_path

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls(**json.load(f))

    @classmethod
    def from_env(cls):
        return cls.load(os.environ[STATE_ENV])

    @classmethod
    def like(cls, other, name, peers=None):
        """Another container of the same image and pod, with ports of its own
        and the same Secret; peers lists every replica's address (its own
        included) when the two should forward to each other."""
        t = cls(other.image, name, other.workdir, other.pod_dir, secret_dirs=other.secret_dirs,
                extra_args=other.extra_args)
        if peers is not None:
            t.peers = list(peers)
        return t

    # -- the pod

    def args(self):
        """The manifest's pyexecd arguments with the cluster's parts replaced."""
        out = []
        for arg in self._pod.args:
            arg = arg.replace("$(POD_IP)", LOOPBACK)
            arg = re.sub(r"=(\[::\]|0\.0\.0\.0):", "=%s:" % LOOPBACK, arg)
            arg = re.sub(r"dns:///[^,]+", ",".join(self.peers), arg)
            m = re.match(r"(--[a-z_]+=%s):(\d+)$" % re.escape(LOOPBACK), arg)
            if m and m.group(2) in self.ports:
                arg = "%s:%d" % (m.group(1), self.ports[m.group(2)])
            out.append(arg)
        return out + self.extra_args

    def tmp_dir(self):
        return os.path.join(self.workdir, self.name + "-tmp")

    def podman_run_command(self):
        pod = self._pod
        cmd = ["run", "--detach", "--name=" + self.name, "--network=host",
               "--label=pyexec.test=container"] + pod.podman_flags() + _host_ulimits()
        for name in pod.env_names:
            if name == "POD_IP":
                cmd.append("--env=POD_IP=" + LOOPBACK)
        for mount_path, _ in pod.empty_dirs.items():
            cmd.append("--volume=%s:%s:rw" % (self.tmp_dir(), mount_path))
        for mount_path in pod.secrets:
            cmd.append("--volume=%s:%s:ro" % (self.secret_dirs[mount_path], mount_path))
        return cmd + [self.image] + self.args()

    def start(self, timeout=90):
        """Starts the container and waits until it is ready (the readiness
        probe's service SERVING). A container of this name that is left
        over is removed first; the emptyDir starts empty, as a new pod's."""
        podman("rm", "--force", "--time=0", self.name, check=False)
        shutil.rmtree(self.tmp_dir(), ignore_errors=True)
        for mount_path in self._pod.empty_dirs:
            make_empty_dir(self.tmp_dir(), self._pod.fs_group)
        podman(*self.podman_run_command())
        deadline = time.monotonic() + timeout
        while True:
            if health_status(self.probe_address, self._pod.readiness_service) == SERVING:
                return self
            if not self.running():
                raise RuntimeError("container %s exited:\n%s" % (self.name, self.logs()[-4000:]))
            if time.monotonic() > deadline:
                raise RuntimeError("container %s not ready after %ds:\n%s"
                                   % (self.name, timeout, self.logs()[-4000:]))
            time.sleep(0.2)

    def running(self):
        out = podman("inspect", "--format={{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def exit_code(self):
        out = podman("inspect", "--format={{.State.ExitCode}}", self.name, check=False)
        return int(out.stdout.strip()) if out.returncode == 0 else None

    def stop(self, timeout=None):
        """SIGTERM, then SIGKILL after the grace period (as the kubelet)."""
        t = self._pod.grace_s if timeout is None else timeout
        podman("stop", "--time=%d" % t, self.name, check=False, timeout=t + 60)

    def kill(self):
        podman("kill", "--signal=KILL", self.name, check=False)

    def restart(self, timeout=90):
        """A new pod in place of this one: stopped with its drain, then
        started again with an empty emptyDir."""
        self.stop()
        return self.start(timeout)

    def remove(self):
        podman("rm", "--force", "--time=0", self.name, check=False, timeout=120)
        shutil.rmtree(self.tmp_dir(), ignore_errors=True)

    def logs(self):
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def private_root(self):
        """The workers' private-directory root inside the container
        (pyexecd's $TMPDIR/pyexecd-XXXXXX, in the emptyDir)."""
        roots = [n for n in os.listdir(self.tmp_dir()) if n.startswith("pyexecd-")]
        if len(roots) != 1:
            raise RuntimeError("expected one pyexecd-* directory in the emptyDir, found %r" % roots)
        (mount_path,) = self._pod.empty_dirs
        return os.path.join(mount_path, roots[0])

    def secret_paths(self):
        """The Secrets' files as pyexecd sees them (inside the container)."""
        return [os.path.join(mount_path, n) for mount_path, d in sorted(self.secret_dirs.items())
                for n in sorted(os.listdir(d)) if not n.startswith("..")]


# ---------------------------------------------------------------- command line

def write_auth_secret(pod, workdir, principals=("alice", "bob")):
    """The Secret pyexec-auth of the base (tokens of each principal and a
    peer secret) at workdir/pyexec-auth; returns ({mount path: directory},
    {principal: token})."""
    ((mount_path, (secret_name, mode)),) = [
        (m, s) for m, s in pod.secrets.items() if s[0] == "pyexec-auth"]
    tokens = {p: os.urandom(16).hex() for p in principals}
    tokens_text = "".join("%s %s\n" % kv for kv in tokens.items()).encode()
    secret_dir = os.path.join(workdir, secret_name)
    write_secret_volume(secret_dir, {"tokens": tokens_text,
                                     "peer-secret": os.urandom(32).hex().encode()},
                        mode, pod.fs_group)
    return {mount_path: secret_dir}, tokens


def _cmd_start(a):
    pod = Pod(render(a.kustomize))
    secret_dirs, tokens = write_auth_secret(pod, a.workdir)
    # The tests' copy of the tokens: the one in the volume is root:fsGroup 0440.
    tokens_copy = os.path.join(a.workdir, "tokens")
    with open(tokens_copy, "w") as f:
        f.write("".join("%s %s\n" % kv for kv in tokens.items()))
    t = Target(a.image, a.name, a.workdir, pod_dir=a.kustomize, secret_dirs=secret_dirs)
    t.start(a.timeout)
    env = {
        "PYEXEC_TEST_TARGET": "container",
        "PYEXEC_TEST_ADDRESS": t.address,
        "PYEXEC_TEST_TOKENS_FILE": tokens_copy,
        "PYEXEC_TEST_SECRET_FILES": ":".join(t.secret_paths()),
        "PYEXEC_TEST_CONTAINER": t.name,
        "PYEXEC_TEST_PRIVATE_ROOT": t.private_root(),
        # The manifest's per-session disk cap, for tests that go past it.
        "PYEXEC_TEST_WORKER_MAX_DISK_MB": next(
            (arg.split("=", 1)[1] for arg in t.args() if arg.startswith("--worker_max_disk_mb=")), "0"),
        STATE_ENV: t.save(),
    }
    for k, v in env.items():
        print("export %s=%s" % (k, shlex.quote(v)))


def _cmd_stop(a):
    t = Target.load(a.state)
    t.stop()
    sys.stderr.write("container %s: exit %s after SIGTERM\n" % (t.name, t.exit_code()))
    t.remove()


def _cmd_logs(a):
    sys.stdout.write(Target.load(a.state).logs())


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="lay out the Secret, start the container, print the "
                                     "test environment as shell exports")
    s.add_argument("--image", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--workdir", required=True, help="an empty directory for volumes and state")
    s.add_argument("--kustomize", default=KUSTOMIZE_DIR)
    s.add_argument("--timeout", type=float, default=90)
    s.set_defaults(func=_cmd_start)
    for name, func in (("stop", _cmd_stop), ("logs", _cmd_logs)):
        s = sub.add_parser(name)
        s.add_argument("--state", required=True, help="the JSON file `start` wrote")
        s.set_defaults(func=func)
    a = p.parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    main(sys.argv[1:])
