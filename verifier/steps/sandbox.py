"""The sandbox a recorded or rebuilt step runs in: bubblewrap, or none.

Inside bubblewrap the host's system directories are read-only, there is no network (a new
network namespace holds only its own loopback) unless it is asked for, /tmp is private, the
user's home and every other directory are absent, and the workspace is the only writable place.
The interpreter the step runs (a virtualenv, a conda prefix, a pyenv build, wherever it lives)
is mounted read-only at its own path, so the step runs exactly as it would outside. Device nodes
(GPUs: /dev/nvidia*) are absent unless passed through by name.

What ran where is recorded in the step's environment (`sandbox`: kind, network, devices), so a
policy can require it.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.errors import InputError

# Read-only inside the sandbox; also the directories whose files are never undeclared inputs.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Kernel interfaces, never build inputs.
PSEUDO_DIRS = ("/proc", "/sys", "/dev")
# Secrets that live under /etc, hidden inside the sandbox (an empty file or folder in their
# place): a step run as root could otherwise read them, and a rebuilt step is someone else's
# code whose report and product names end up in an attestation the rebuilder publishes.
SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                "/etc/sudoers", "/etc/security/opasswd")
SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/pki/tls/private", "/etc/sudoers.d",
               "/etc/docker", "/etc/kubernetes", "/etc/letsencrypt", "/etc/wireguard",
               "/etc/openvpn", "/etc/NetworkManager/system-connections", "/etc/ipsec.d")
CHOICES = ("auto", "bwrap", "none")
# The step runs as this unprivileged user and group inside its own user namespace, with no
# capabilities and no way to make another namespace: a caller that is root (CI containers)
# would otherwise hand the step every capability, and with them `umount` of the mounts that
# hide the signing key and /etc's secrets, and `mount -o remount,rw` of the read-only ones.
# Fixed, not the caller's, so files the step makes (a tar's owner fields) do not depend on
# who ran it. Inside, the step still owns the caller's files: the writable mounts stay usable.
STEP_UID = STEP_GID = 65534
_UNPRIVILEGED = ("--unshare-user", "--uid", str(STEP_UID), "--gid", str(STEP_GID),
                 "--cap-drop", "ALL")
# Files of a recorder's workspace a step may not read, besides the signing key: private keys.
_PRIVATE_KEY_MARKERS = (b"PRIVATE KEY-----", b"-----BEGIN OPENSSH PRIVATE KEY")


@dataclass(frozen=True)
class Sandbox:
    """How a step runs: `kind` bwrap or none; `network` True when the step may reach it."""

    kind: str
    network: bool
    devices: tuple[str, ...] = ()
    warning: str | None = None
    executable: str | None = None
    # True when `auto` found no usable bubblewrap: a rebuild (a stranger's step) refuses that.
    fallback: bool = False

    @property
    def isolated(self) -> bool:
        return self.kind == "bwrap"

    def describe(self) -> dict[str, Any]:
        """The record of it that goes into the signed environment."""
        return {
            "kind": self.kind,
            "network": "host" if self.network or not self.isolated else "none",
            "devices": sorted(self.devices),
        }

    def wrap(self, argv: Sequence[str], workspace: Path, workdir: Path,
             env: Mapping[str, str], readable: Sequence[Path] = (),
             hidden: Sequence[Path] = (), blank: Path | None = None,
             writable: Sequence[Path] = (), trusted_workspace: bool = True,
             products: Sequence[Path] | None = None,
             materials: Sequence[Path] = ()) -> list[str]:
        """The command line that runs argv in this sandbox (argv itself when there is none).

        `readable`: declared materials that a link in the workspace leads to outside it,
        mounted read-only where the link points. `hidden`: files inside the workspace the step
        must not read (the signing key), replaced by `blank`, an empty file. `writable`:
        directories outside the workspace the step may write (where its report goes), bound at
        their own path. `trusted_workspace`: False when the workspace's files are someone
        else's (a rebuild): nothing in it then adds a mount outside it (interpreter_roots).
        `products`: when given (record), the workspace is the recorder's own checkout: it is
        read-only except where these products go (workspace_mounts), and its private keys
        read as `blank`, except declared `materials` (a key the step is declared to read).
        """
        if not self.isolated:
            return list(argv)
        assert self.executable is not None
        workspace = Path(os.path.abspath(workspace))
        roots = interpreter_roots(argv[0], env.get("PATH"), workdir,
                                  None if trusted_workspace else workspace)
        args = [self.executable, "--die-with-parent", "--unshare-all",
                *_unprivileged(self.executable)]
        if self.network:
            args.append("--share-net")
        args += _system_mounts()
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        # Mounts are applied in order: the interpreter's prefix read-only after the workspace,
        # so that a virtualenv inside the workspace cannot be changed by the step either.
        outside = [r for r in roots if not r.is_relative_to(workspace)]
        inside = [r for r in roots if r.is_relative_to(workspace)]
        for root in outside:
            args += ["--ro-bind", str(root), str(root)]
        if products is None:
            args += ["--bind", str(workspace), str(workspace)]
        else:
            args += workspace_mounts(workspace, products)
        for root in inside:
            args += ["--ro-bind", str(root), str(root)]
        for path in sorted({Path(os.path.realpath(p)) for p in readable}):
            args += ["--ro-bind", str(path), str(path)]
        secret = {Path(os.path.abspath(p)) for p in hidden}
        if products is not None:
            # The signing key stays hidden even when declared: `hidden` is added regardless.
            secret |= set(private_keys(workspace, keep=[*products, *materials]))
        for path in sorted(secret if blank else ()):
            if path.is_relative_to(workspace) and path.is_file():
                args += ["--ro-bind", str(blank), str(path)]
        for path in sorted({Path(os.path.abspath(p)) for p in writable}):
            args += ["--bind", str(path), str(path)]
        for device in self.devices:
            args += ["--dev-bind", device, device]
        # The sandbox's own root (where HOME would be created) is read-only too: the workspace
        # and the private /tmp are the only writable places. The private /tmp holds nothing
        # the host's TMPDIR may name.
        args += ["--remount-ro", "/", "--setenv", "TMPDIR", "/tmp",
                 "--chdir", str(os.path.abspath(workdir)), "--"]
        return args + list(argv)


def workspace_mounts(workspace: Path, products: Sequence[Path]) -> list[str]:
    """Mounts of a recorder's workspace: read-only, except the directories its declared products
    go into (made if missing) and products that are directories. In a writable directory every
    entry that existed before and is not a product (or on the way to one) is bound read-only
    over itself, so the step can add files there but neither change, replace nor remove any:
    not `.git` (hooks, a clean filter that run on the next commit), not keys/builder.pub (a
    policy's trust anchor), not the sources.
    """
    targets = {Path(os.path.abspath(p)) for p in products}
    whole: set[Path] = set()  # directory products: everything in them is the step's to write
    parents: set[Path] = set()
    for target in targets:
        if not target.is_relative_to(workspace) or target == workspace:
            continue
        if target.is_dir() and not target.is_symlink():
            whole.add(target)
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue  # in or through a file: the step cannot write it, record says so after
        if Path(os.path.realpath(parent)) == parent:  # never a link's target outside
            parents.add(parent)
    args = ["--ro-bind", str(workspace), str(workspace)]
    for directory in sorted(whole | parents):
        args += ["--bind", str(directory), str(directory)]
    on_the_way = {a for t in targets for a in t.parents} | targets
    for directory in sorted(parents):
        if any(directory.is_relative_to(product) for product in whole):
            continue
        for entry in sorted(directory.iterdir()):
            if entry not in on_the_way and not entry.is_symlink():
                args += ["--ro-bind", str(entry), str(entry)]
    git = workspace / ".git"
    if git.exists() and not git.is_symlink():
        args += ["--ro-bind", str(git), str(git)]
    return args


def private_keys(workspace: Path, keep: Sequence[Path] = ()) -> list[Path]:
    """Files of the workspace that are private keys (named *.key, or holding a PEM or OpenSSH
    private key near their start), outside .git and the interpreters, except those in `keep`
    (a product the step rewrites, a declared material, or inside one)."""
    kept = {Path(os.path.abspath(p)) for p in keep}
    found: list[Path] = []
    for top, directories, files in os.walk(workspace):
        directories[:] = [d for d in directories if d != ".git"
                          and not (Path(top, d) / "pyvenv.cfg").is_file()]
        for name in files:
            path = Path(top, name)
            if path.is_symlink() or any(path.is_relative_to(k) for k in kept):
                continue
            if name.endswith(".key") or _holds_private_key(path):
                found.append(path)
    return found


def _holds_private_key(path: Path) -> bool:
    try:
        if path.stat().st_size > 1 << 20:
            return False  # a key is small; a model or data set is not read here
        with open(path, "rb") as handle:
            start = handle.read(4096)
    except OSError:
        return False
    return any(marker in start for marker in _PRIVATE_KEY_MARKERS)


@functools.cache
def _unprivileged(executable: str) -> tuple[str, ...]:
    """_UNPRIVILEGED, and no user namespace inside the step where this bubblewrap can say so
    (0.8.0 on). Without it a nested namespace still cannot unmount or remount what bubblewrap
    mounted: the kernel locks mounts inherited from a more privileged namespace."""
    try:
        usage = subprocess.run([executable, "--help"], capture_output=True, text=True,
                               timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        usage = ""
    return _UNPRIVILEGED + (("--disable-userns",) if "--disable-userns" in usage else ())


def _system_mounts() -> list[str]:
    args: list[str] = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    for secret in SECRET_FILES:
        if os.path.isfile(secret) and not os.path.islink(secret):
            args += ["--ro-bind", "/dev/null", secret]
    for secret in SECRET_DIRS:
        if os.path.isdir(secret) and not os.path.islink(secret):
            args += ["--tmpfs", secret]
    if os.path.isdir("/sys"):
        # Read by BLAS and CUDA libraries for the CPU and device topology; read-only.
        args += ["--ro-bind", "/sys", "/sys"]
    return args


def is_system_path(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS + PSEUDO_DIRS)


def _prefix_of(executable: Path) -> tuple[Path, bool]:
    """The environment an executable belongs to and whether it is a venv or conda prefix
    (otherwise: the directory holding its bin/, as for a pyenv or /opt build)."""
    for parent in executable.parents:
        if (parent / "pyvenv.cfg").is_file() or (parent / "conda-meta").is_dir():
            return parent, True
    directory = executable.parent
    if directory.name == "shims" and (directory.parent / "libexec").is_dir():
        return directory.parent, False  # pyenv (or rbenv): the shim runs the manager's tree
    return (directory.parent if directory.name == "bin" else directory), False


def _environment_prefix(directory: Path) -> Path | None:
    """The venv or conda prefix a bin/ directory belongs to, if it is one."""
    prefix = directory.parent
    if (prefix / "pyvenv.cfg").is_file() or (prefix / "conda-meta").is_dir():
        return prefix
    return None


def interpreter_roots(program: str, path: str | None, workdir: Path,
                      untrusted: Path | None = None) -> list[Path]:
    """The non-system directories the step's program needs to run, read-only: its venv or
    conda prefix (or the installation its executable lives in), the base installation a venv
    points at, and every venv or conda prefix on PATH (a `sh -c "python ..."` step runs the
    PATH's python).

    `untrusted`: a workspace whose files are someone else's (a rebuild's). A program inside it,
    or a link in it, adds no root outside it, and no pyvenv.cfg inside it is read: its `home`
    could name any directory of the rebuilder's (a home, a socket's folder). Only interpreters
    outside it, the rebuilder's own, add roots of their own.
    """
    workspace = Path(os.path.abspath(workdir))
    fence = Path(os.path.abspath(untrusted)) if untrusted is not None else None

    def foreign(candidate: Path) -> bool:
        return fence is not None and candidate.is_relative_to(fence)

    roots: list[Path] = []
    found = shutil.which(program, path=path) if "/" not in program else str(workdir / program)
    if found:
        located = Path(os.path.abspath(found))
        executables = [located] if foreign(located) else [located, Path(os.path.realpath(found))]
        for executable in executables:
            prefix, is_environment = _prefix_of(executable)
            if executable is located and not is_environment and str(executables[-1]) != str(
                    located):
                continue  # a link to an installation elsewhere (~/bin/python3 would mount ~)
            if foreign(located) and not foreign(prefix):
                continue  # the workspace's program says nothing about the rebuilder's machine
            if prefix.is_relative_to(fence or workspace) and not is_environment:
                continue  # a script or binary of the workspace itself stays writable
            roots.append(prefix)
    for entry in (path or "").split(os.pathsep):
        if entry and os.path.isabs(entry) and not is_system_path(entry):
            prefix = _environment_prefix(Path(entry))
            if prefix is not None:
                roots.append(prefix)
    for prefix in list(roots):
        if not foreign(prefix):
            roots.extend(_venv_home(prefix))
    unique: list[Path] = []
    homes = _home_directories()
    for root in roots:
        if is_system_path(str(root)) or str(root) == "/" or root in unique:
            continue
        if not is_python_installation(root) or any(h.is_relative_to(root) for h in homes):
            # A program decides nothing: the folder around ~/.cargo/bin/tool or ~/bin/tool is
            # no interpreter, and mounting it would show the step the credentials beside it.
            continue
        if foreign(root) and not Path(os.path.realpath(root)).is_relative_to(
                os.path.realpath(fence or root)):
            continue  # a link of the workspace would make the mount show what it leads to
        unique.append(root)
    # A root inside another is covered by it.
    return sorted(r for r in unique if not any(r != o and r.is_relative_to(o) for o in unique))


def is_python_installation(root: Path) -> bool:
    """Whether root is, by its layout, a Python installation a step may see whole: a venv
    (pyvenv.cfg), a conda prefix (conda-meta/), a prefix holding a standard library
    (lib/pythonX.Y/os.py: a pyenv, uv or /opt build) or a pyenv tree (libexec/ and versions/).
    """
    try:
        return ((root / "pyvenv.cfg").is_file() or (root / "conda-meta").is_dir()
                or any(root.glob("lib/python3*/os.py"))
                or ((root / "libexec").is_dir() and (root / "versions").is_dir()))
    except OSError:
        return False


def _home_directories() -> list[Path]:
    """Every user's home (and HOME): never mounted whole, whatever a program's path says."""
    import pwd

    homes = {Path(os.path.realpath(entry.pw_dir)) for entry in pwd.getpwall()
             if entry.pw_dir not in ("", "/")}
    if os.environ.get("HOME", "/") != "/":
        homes.add(Path(os.path.realpath(os.environ["HOME"])))
    return sorted(homes)


def _venv_home(prefix: Path) -> list[Path]:
    """The base installation a venv's pyvenv.cfg names as `home`, when that directory really
    holds a Python (a `home` naming anything else is no interpreter and mounts nothing)."""
    config = prefix / "pyvenv.cfg"
    if not config.is_file():
        return []
    for line in config.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            home = Path(os.path.realpath(value.strip()))
            try:
                holds_python = any(entry.name.startswith("python") and entry.is_file()
                                   for entry in home.iterdir())
            except OSError:
                holds_python = False
            base = home.parent if home.name == "bin" else home
            if holds_python and is_python_installation(base):
                return [base]
    return []


def _check_device(device: str) -> str:
    path = Path(device)
    if not path.is_absolute() or not device.startswith("/dev/"):
        raise InputError(f"--device {device}: name a device node under /dev, e.g. /dev/nvidia0.")
    try:
        mode = path.stat().st_mode
    except OSError:
        raise InputError(f"--device {device}: no such device node.") from None
    if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"--device {device}: is not a device node.")
    return os.path.abspath(device)


def resolve(choice: str, *, network: bool = False, devices: Sequence[str] = ()) -> Sandbox:
    """The sandbox to use; InputError (before anything runs) when it cannot be had.

    auto: bubblewrap when it is installed and can start here, otherwise none (with a warning to
    show); bwrap: bubblewrap or an error; none: no isolation at all (network and devices are
    then the host's).
    """
    if choice not in CHOICES:
        raise InputError(f"--sandbox {choice}: expected one of {', '.join(CHOICES)}.")
    checked = tuple(sorted({_check_device(d) for d in devices}))
    executable = shutil.which("bwrap")
    if choice == "none" or (choice == "auto" and executable is None):
        if checked:
            raise InputError("--device passes devices into a sandbox; without one (--sandbox "
                             "none) the step sees every device anyway.")
        warning = None if choice == "none" else (
            "bubblewrap (bwrap) is not installed, so the step runs without a sandbox: with "
            "network, the whole filesystem and your home directory.")
        return Sandbox("none", True, (), warning, fallback=choice == "auto")
    if executable is None:
        raise InputError("--sandbox bwrap: bubblewrap (bwrap) is not installed; install it "
                         "(Debian/Ubuntu: apt-get install bubblewrap) or pass --sandbox none.")
    sandbox = Sandbox("bwrap", network, checked, None, executable)
    try:
        _probe(sandbox)
    except InputError as error:
        # A property of this machine, not of any attestation: auto says so and goes on
        # unsandboxed (recorded as such, so a policy can refuse it); bwrap stops here.
        if choice == "bwrap" or checked:
            raise
        return Sandbox("none", True, (), f"{error} Running without a sandbox instead.",
                       fallback=True)
    return sandbox


def _probe(sandbox: Sandbox) -> None:
    """Start the sandbox once with `true`: a sandbox that cannot start is refused up front."""
    true = shutil.which("true") or "/bin/true"
    executable = sandbox.executable or "bwrap"
    argv = [executable, "--die-with-parent", "--unshare-all", *_unprivileged(executable),
            *_system_mounts(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--",
            true]
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                   check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as error:
        raise InputError(f"the bubblewrap sandbox cannot start ({error}); nothing was run."
                         ) from None
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise InputError(f"the bubblewrap sandbox cannot start ({reason}; user namespaces may "
                         "be disabled); nothing was run.")
