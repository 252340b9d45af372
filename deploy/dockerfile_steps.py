#!/usr/bin/env python3
"""Runs deploy/Dockerfile's own steps on this Debian 12 machine, without a Docker engine.

Entry point: deploy/run-dockerfile-steps.sh, which runs this inside a private mount namespace
(unshare --mount --propagation private) so that every mount below disappears with the process and
none is ever visible on the host.

What it does, instruction by instruction (docs/operations.md, "Running the Dockerfile without
Docker"):
  FROM debian:12[-slim] [AS name]  a stage root: this machine's Debian 12 directories (usr, etc,
                                   var, ...) as the lower layers of copy-on-write overlays whose
                                   upper layers live in the work directory, so a step's writes
                                   (apt, useradd, mkdir, rm -rf /var/lib/apt/lists/*) never reach
                                   the host; /proc, /dev, /sys mounted; /tmp and /run private.
  ARG / ENV                        variables (ENV also for the started server and health check).
  WORKDIR                          created in the stage root; the directory RUN steps start in.
  COPY SRC... DST                  from the build context (the repository, minus the
                                   Dockerfile.dockerignore patterns) or, with --from=STAGE, from
                                   that stage's root.
  RUN (shell form)                 /bin/sh -c in the stage root (chroot) as the current USER. An
                                   apt-get install step whose packages are all installed already is
                                   skipped with a message (a missing one makes it run for real,
                                   inside the overlay).
  USER uid[:gid]                   RUN steps and the server run as it (setuid/setgid).
  VOLUME                           a fresh directory per volume, initialised from the image's
                                   content at that path (owner, mode, files) as Docker does for a
                                   new volume, bind-mounted over it.
  EXPOSE                           recorded; the server runs in its own network namespace (only
                                   loopback), so the fixed port cannot collide with the host's.
  HEALTHCHECK / ENTRYPOINT / CMD   the server is started as ENTRYPOINT + CMD with the ENV, as USER,
                                   chrooted into the runtime root; the health check command runs
                                   in the same root and network namespace on Docker's schedule
                                   (every --interval, --timeout each, failures within
                                   --start-period not counted, unhealthy after --retries) until it
                                   reports healthy. Then SIGTERM; the server must exit 0.
Anything else (or a flag of these it does not know) fails loudly.

Usage (as root, through the wrapper): dockerfile_steps.py --work=DIR --context=REPO
          --dockerfile=REPO/deploy/Dockerfile [--bundle=PATH]
"""
import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

KNOWN = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "USER", "VOLUME", "EXPOSE",
         "HEALTHCHECK", "ENTRYPOINT", "CMD"}
# The top-level directories of a Debian 12 image, taken from this machine as overlay lower layers
# (directories) or copied (the merged-/usr symlinks bin, lib, lib64, sbin, ...).
BASE_ENTRIES = ["bin", "boot", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
                "opt", "root", "sbin", "srv", "usr", "var"]
# Docker's default PATH for Linux containers.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerfileError(Exception):
    pass


def log(message):
    print(f"dockerfile-steps: {message}", flush=True)


# ---- parsing --------------------------------------------------------------------------------------

def parse(path):
    """Returns [(line_number, KEYWORD, argument text)], continuation lines joined, comments dropped."""
    instructions = []
    pending, start = "", 0
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.strip().startswith("#"):
                continue  # comments (also inside a continued instruction, as Docker does)
            if not pending and not line.strip():
                continue
            if not pending:
                start = number
            if line.endswith("\\"):
                pending += line[:-1]
                continue
            pending += line
            keyword, _, rest = pending.strip().partition(" ")
            keyword = keyword.upper()
            if keyword not in KNOWN:
                raise DockerfileError(f"{path}:{start}: instruction {keyword} is not supported by "
                                      "this script (it understands " + ", ".join(sorted(KNOWN)) + ")")
            instructions.append((start, keyword, rest.strip()))
            pending = ""
    if pending:
        raise DockerfileError(f"{path}:{start}: the file ends inside a continued instruction")
    return instructions


def take_flags(text, allowed, where):
    """Splits leading --name=value flags off `text`; unknown flags fail."""
    flags = {}
    while text.startswith("--"):
        flag, _, text = text.partition(" ")
        name, eq, value = flag[2:].partition("=")
        if name not in allowed or not eq:
            raise DockerfileError(f"{where}: flag {flag} is not supported")
        flags[name] = value
        text = text.strip()
    return flags, text


def command_form(text, where):
    """Exec form (a JSON array) as a list; shell form as ["/bin/sh", "-c", text]."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise DockerfileError(f"{where}: bad JSON array: {e}")
        if not all(isinstance(v, str) for v in value):
            raise DockerfileError(f"{where}: the JSON array must hold strings")
        return value
    return ["/bin/sh", "-c", text]


def substitute(text, variables):
    """$NAME and ${NAME} from ARG / ENV (Docker's forms with :- / :+ are not used, so not done)."""
    def value(match):
        name = match.group(1) or match.group(2)
        return variables.get(name, "")
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def duration_seconds(text, where):
    total, matched = 0.0, 0
    for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", text):
        total += float(number) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
        matched += len(number) + len(unit)
    if matched != len(text) or not text:
        raise DockerfileError(f"{where}: bad duration {text!r}")
    return total


# ---- stage roots --------------------------------------------------------------------------------

def run(argv, **kwargs):
    subprocess.run(argv, check=True, **kwargs)


def make_root(work, name):
    """A root-like directory: this machine's Debian 12 entries as copy-on-write overlays."""
    base = os.path.join(work, "stages", name)
    root = os.path.join(base, "root")
    os.makedirs(root)
    for entry in BASE_ENTRIES:
        host = "/" + entry
        target = os.path.join(root, entry)
        if os.path.islink(host):
            os.symlink(os.readlink(host), target)
        elif os.path.isdir(host):
            upper = os.path.join(base, "upper", entry)
            workdir = os.path.join(base, "work", entry)
            for d in (target, upper, workdir):
                os.makedirs(d)
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={host},upperdir={upper},workdir={workdir}", target])
    for entry, mode in (("tmp", 0o1777), ("run", 0o755), ("proc", 0o555), ("dev", 0o755),
                        ("sys", 0o555)):
        os.makedirs(os.path.join(root, entry))
        os.chmod(os.path.join(root, entry), mode)
    run(["mount", "-t", "proc", "proc", os.path.join(root, "proc")])
    run(["mount", "--rbind", "/dev", os.path.join(root, "dev")])
    run(["mount", "--rbind", "/sys", os.path.join(root, "sys")])
    return root


def inside(root, path):
    return os.path.join(root, path.lstrip("/"))


def parse_user(text, root, where):
    user, _, group = text.partition(":")

    def lookup(value, database):
        if value.isdigit():
            return int(value)
        with open(inside(root, f"/etc/{database}")) as f:
            for line in f:
                fields = line.split(":")
                if fields[0] == value:
                    return int(fields[2])
        raise DockerfileError(f"{where}: {database} has no {value!r} in the image")

    uid = lookup(user, "passwd")
    gid = lookup(group, "group") if group else uid
    return uid, gid


def dockerignore(context, dockerfile):
    patterns = []
    for candidate in (dockerfile + ".dockerignore", os.path.join(context, ".dockerignore")):
        if os.path.exists(candidate):
            with open(candidate) as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    if line.startswith("!") or "**" in line:
                        raise DockerfileError(f"{candidate}: pattern {line!r} is not supported")
                    patterns.append(line.rstrip("/").lstrip("/"))
            break  # Docker uses the Dockerfile-specific file if there is one, else .dockerignore
    return patterns


def copy_context(context, patterns, destination):
    def ignored(relative):
        parts = relative.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[:i]), p)
                   for p in patterns for i in range(1, len(parts) + 1))

    count = 0
    for directory, dirs, files in os.walk(context):
        relative_dir = os.path.relpath(directory, context)
        prefix = "" if relative_dir == "." else relative_dir + "/"
        dirs[:] = [d for d in dirs if not ignored(prefix + d)]
        os.makedirs(os.path.join(destination, prefix), exist_ok=True)
        for name in dirs:
            if os.path.islink(os.path.join(directory, name)):
                os.symlink(os.readlink(os.path.join(directory, name)),
                           os.path.join(destination, prefix + name))
        for name in files:
            if ignored(prefix + name):
                continue
            shutil.copy2(os.path.join(directory, name), os.path.join(destination, prefix + name),
                         follow_symlinks=False)
            count += 1
    return count


def apt_install_packages(command):
    """The packages of `apt-get install` in a shell command (None if it installs nothing)."""
    words = shlex.split(command.replace("\\\n", " "))
    packages = None
    for i, word in enumerate(words):
        if word == "install" and i > 0 and words[i - 1] in ("apt-get", "apt"):
            packages = []
            for following in words[i + 1:]:
                if following in ("&&", "||", ";", "|"):
                    break
                if not following.startswith("-"):
                    packages.append(following)
    return packages


def missing_packages(root, packages):
    missing = []
    for package in packages:
        result = subprocess.run(["chroot", root, "dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True)
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


# ---- the stages -----------------------------------------------------------------------------------

class Stage:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.env = {}
        self.args = {}
        self.workdir = "/"
        self.user = (0, 0)
        self.volumes = []
        self.exposed = []
        self.healthcheck = None
        self.entrypoint = []
        self.cmd = []

    def environment(self, extra=None):
        env = {"PATH": DEFAULT_PATH, "HOME": "/root" if self.user[0] == 0 else self.home()}
        env.update(self.args)
        env.update(self.env)
        env.update(extra or {})
        return env

    def home(self):
        # Docker sets HOME from the image's /etc/passwd entry of the user (else "/").
        try:
            with open(inside(self.root, "/etc/passwd")) as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) > 5 and int(fields[2]) == self.user[0]:
                        return fields[5]
        except (OSError, ValueError):
            pass
        return "/"

    def chrooted(self, argv, workdir=None):
        """argv run in this stage's root as its USER, with its environment and working directory."""
        uid, gid = self.user
        env = self.environment()
        # setpriv (util-linux, in the base layer) drops root for a non-root USER: uid, gid, and no
        # supplementary groups, as Docker does for a numeric USER.
        prefix = ["chroot", self.root]
        if uid or gid:
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        inner = ["/usr/bin/env", "-i"] + [f"{k}={v}" for k, v in env.items()]
        cd = workdir or self.workdir
        # chroot(1) starts in "/", so a shell changes to the WORKDIR first.
        return prefix + inner + ["/bin/sh", "-c", f'cd {shlex.quote(cd)} && exec "$@"', "sh"] + argv


def execute(dockerfile, context, work):
    instructions = parse(dockerfile)
    stages, stage, global_args = {}, None, {}
    patterns = dockerignore(context, dockerfile)
    started = time.monotonic()
    for number, keyword, text in instructions:
        where = f"{dockerfile}:{number}"
        if keyword == "ARG":
            name, _, default = text.partition("=")
            target = stage.args if stage else global_args
            known = {**global_args, **(stage.env if stage else {})}
            target[name.strip()] = substitute(default.strip().strip('"'), known)
            continue
        if keyword == "FROM":
            words = substitute(text, global_args).split()
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                raise DockerfileError(f"{where}: expected FROM IMAGE [AS NAME]")
            image = words[0]
            if image not in ("debian:12", "debian:12-slim", "debian:bookworm",
                             "debian:bookworm-slim"):
                raise DockerfileError(f"{where}: base image {image} is not Debian 12; only Debian "
                                      "12 images can be taken from this machine")
            name = words[2] if len(words) == 3 else f"stage{len(stages)}"
            stage = Stage(name, make_root(work, name))
            stages[name] = stage
            log(f"FROM {image} (stage {name}): this machine's Debian 12 as copy-on-write root "
                f"{stage.root}")
            continue
        if stage is None:
            raise DockerfileError(f"{where}: {keyword} before FROM")
        variables = {**stage.args, **stage.env}
        if keyword == "ENV":
            for key, value in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', text):
                stage.env[key] = substitute(value[1:-1] if value.startswith('"') else value,
                                            variables)
            if not stage.env:
                raise DockerfileError(f"{where}: expected ENV KEY=VALUE ...")
            log(f"ENV {text}")
        elif keyword == "WORKDIR":
            path = substitute(text, variables)
            stage.workdir = os.path.join(stage.workdir, path)
            os.makedirs(inside(stage.root, stage.workdir), exist_ok=True)
            log(f"WORKDIR {stage.workdir}")
        elif keyword == "COPY":
            flags, rest = take_flags(text, {"from"}, where)
            words = [substitute(w, variables) for w in
                     (json.loads(rest) if rest.startswith("[") else rest.split())]
            sources, destination = words[:-1], words[-1]
            if not sources:
                raise DockerfileError(f"{where}: expected COPY SRC... DST")
            destination = os.path.join(stage.workdir, destination)
            target = inside(stage.root, destination)
            if "from" in flags:
                source_stage = stages.get(flags["from"])
                if source_stage is None:
                    raise DockerfileError(f"{where}: no stage named {flags['from']} before it")
                if len(sources) > 1 and not destination.endswith("/"):
                    raise DockerfileError(f"{where}: several sources need a DST ending in /")
                os.makedirs(target if destination.endswith("/") else os.path.dirname(target),
                            exist_ok=True)
                for source in sources:
                    path = inside(source_stage.root, source)
                    if not os.path.exists(path):
                        raise DockerfileError(f"{where}: {source} does not exist in stage "
                                              f"{flags['from']}")
                    if os.path.isdir(path):
                        shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
                    else:
                        shutil.copy2(path, target)
                log(f"COPY --from={flags['from']} {' '.join(sources)} -> {destination}")
            else:
                if sources != ["."]:
                    raise DockerfileError(f"{where}: only COPY . DST is supported from the context")
                count = copy_context(context, patterns, target)
                log(f"COPY . {destination}: {count} files of the context (ignoring "
                    f"{', '.join(patterns)})")
        elif keyword == "RUN":
            if text.startswith("["):
                raise DockerfileError(f"{where}: exec-form RUN is not supported")
            command = text  # the shell expands the variables, as in Docker
            packages = apt_install_packages(command)
            if packages is not None:
                missing = missing_packages(stage.root, packages)
                if not missing:
                    log(f"RUN (line {number}) skipped: its apt-get install packages are all "
                        f"installed in the base already ({' '.join(packages)})")
                    continue
                log(f"RUN (line {number}): {len(missing)} packages missing ({' '.join(missing)}): "
                    "running the step (apt writes into the stage's overlay only)")
            log(f"RUN (line {number}) as {stage.user[0]}:{stage.user[1]} in {stage.workdir}: "
                f"{command}")
            step_start = time.monotonic()
            result = subprocess.run(stage.chrooted(["/bin/sh", "-c", command]))
            if result.returncode != 0:
                raise DockerfileError(f"{where}: RUN failed with exit status {result.returncode}")
            log(f"RUN (line {number}) done in {time.monotonic() - step_start:.0f} s")
        elif keyword == "USER":
            stage.user = parse_user(substitute(text, variables), stage.root, where)
            log(f"USER {stage.user[0]}:{stage.user[1]}")
        elif keyword == "VOLUME":
            paths = json.loads(text) if text.startswith("[") else text.split()
            stage.volumes.extend(substitute(p, variables) for p in paths)
            log(f"VOLUME {' '.join(stage.volumes)}")
        elif keyword == "EXPOSE":
            stage.exposed.extend(text.split())
            log(f"EXPOSE {text}")
        elif keyword == "HEALTHCHECK":
            flags, rest = take_flags(text, {"interval", "timeout", "start-period", "retries",
                                            "start-interval"}, where)
            if rest.upper() == "NONE":
                stage.healthcheck = None
                continue
            if not rest.upper().startswith("CMD "):
                raise DockerfileError(f"{where}: expected HEALTHCHECK [OPTIONS] CMD ...")
            stage.healthcheck = {
                "command": command_form(rest[4:].strip(), where),
                "interval": duration_seconds(flags.get("interval", "30s"), where),
                "timeout": duration_seconds(flags.get("timeout", "30s"), where),
                "start_period": duration_seconds(flags.get("start-period", "0s"), where),
                "retries": int(flags.get("retries", "3")),
            }
            log(f"HEALTHCHECK {text}")
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = command_form(text, where)
            stage.cmd = []  # Docker resets an inherited CMD when ENTRYPOINT is set
        elif keyword == "CMD":
            stage.cmd = command_form(text, where)
    log(f"image steps done in {time.monotonic() - started:.0f} s")
    return stage


def start_and_check(stage, work, bundle):
    root = stage.root
    # Volumes: a fresh directory each, initialised from the image's content there (Docker copies
    # it, with owner and mode, into a new volume), bind-mounted over the path.
    for index, path in enumerate(stage.volumes):
        volume = os.path.join(work, "volumes", str(index))
        shutil.copytree(inside(root, path), volume, symlinks=True)
        image_dir = os.stat(inside(root, path))
        os.chown(volume, image_dir.st_uid, image_dir.st_gid)
        run(["mount", "--bind", volume, inside(root, path)])
        log(f"volume {path}: fresh directory {volume} (owner {image_dir.st_uid}:{image_dir.st_gid})")

    # The model: the bundle the operator mounts read-only at /models (see the Dockerfile's header).
    models = os.path.join(work, "models")
    os.makedirs(models, exist_ok=True)
    os.makedirs(inside(root, "/models"), exist_ok=True)
    run(["mount", "--bind", models, inside(root, "/models")])
    if bundle:
        shutil.copy2(bundle, os.path.join(models, "strata.bundle"))
    else:
        # A small model, trained by the image's own strata-train (run as root, like
        # `docker run --user root strata strata-train ...`; the data set comes from the base layer).
        spec = os.path.join(models, "small.spec")
        with open(spec, "w") as f:
            f.write("input 28 28 1\nconv patch=5 filters=4 pca_images=1000\nsplit_relu\n"
                    "pool size=4\nstandardise\nexpand units=128 bias_scale=0.3\n")
        trainer = Stage("train", root)
        trainer.env = dict(stage.env)
        log("training a small model with the image's strata-train into /models/strata.bundle")
        run(trainer.chrooted(["strata-train", "--train=fashion-mnist:train", "--train_limit=1000",
                              "--test=", "--spec=/models/small.spec",
                              "--out=/models/strata.bundle"]),
            stdout=subprocess.DEVNULL)
    run(["mount", "-o", "remount,bind,ro", inside(root, "/models")])

    argv = stage.entrypoint + stage.cmd
    if not argv:
        raise DockerfileError("the image has neither ENTRYPOINT nor CMD")
    # Its own network namespace: only loopback, so the image's fixed port (EXPOSE) is free.
    inner = stage.chrooted(argv)
    server_log = open(os.path.join(work, "server.log"), "w")
    log(f"starting {' '.join(argv)} as {stage.user[0]}:{stage.user[1]} (own network namespace)")
    server = subprocess.Popen(
        ["unshare", "--net", "/bin/sh", "-c", 'ip link set lo up && exec "$@"', "sh"] + inner,
        stdout=server_log, stderr=subprocess.STDOUT)
    try:
        healthy_after = wait_healthy(stage, server)
        # The server is the process itself (every wrapper exec'd), so its status tells the uid.
        with open(f"/proc/{server.pid}/status") as f:
            uid_line = next(l for l in f if l.startswith("Uid:"))
        with open(f"/proc/{server.pid}/comm") as f:
            comm = f.read().strip()
        uids = set(uid_line.split()[1:])
        log(f"process {server.pid} ({comm}) runs with uid {' / '.join(uid_line.split()[1:])}")
        if comm != os.path.basename(argv[0])[:15] or uids != {str(stage.user[0])}:
            raise DockerfileError(f"the server runs as {comm} uid {uids}, expected "
                                  f"{argv[0]} uid {stage.user[0]}")
        info = subprocess.run(
            ["nsenter", f"--net=/proc/{server.pid}/ns/net", "--"] +
            stage.chrooted(["strata", "info", "--server=127.0.0.1:50051"]),
            capture_output=True, text=True, timeout=30)
        for line in info.stdout.splitlines()[:3]:
            log(f"strata info: {line}")
        log(f"healthy after {healthy_after:.1f} s; stopping it with SIGTERM")
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    except BaseException:
        server.kill()
        server.wait()
        server_log.close()
        print(open(os.path.join(work, "server.log")).read()[-4000:], file=sys.stderr)
        raise
    server_log.close()
    if code != 0:
        print(open(os.path.join(work, "server.log")).read()[-4000:], file=sys.stderr)
        raise DockerfileError(f"the server exited with status {code} after SIGTERM, expected 0")
    log("the server exited 0 after SIGTERM")
    for path in stage.volumes:
        volume = os.path.join(work, "volumes", str(stage.volumes.index(path)))
        owners = {(os.lstat(os.path.join(d, n)).st_uid) for d, ds, fs in os.walk(volume)
                  for n in ds + fs}
        log(f"volume {path} after the run: {sorted(os.listdir(volume))} (owners {sorted(owners)})")


def wait_healthy(stage, server):
    check = stage.healthcheck
    if check is None:
        raise DockerfileError("the image has no HEALTHCHECK to wait for")
    argv = ["nsenter", f"--net=/proc/{server.pid}/ns/net", "--"] + stage.chrooted(check["command"])
    start = time.monotonic()
    failures = 0
    while True:
        # Docker runs the first probe one interval after the start, then every interval.
        time.sleep(check["interval"])
        if server.poll() is not None:
            raise DockerfileError(f"the server exited with status {server.returncode} before it "
                                  "was healthy")
        elapsed = time.monotonic() - start
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=check["timeout"])
            code = result.returncode
            output = (result.stdout + result.stderr).strip()
        except subprocess.TimeoutExpired:
            code, output = -1, f"timed out after {check['timeout']} s"
        log(f"health check at {elapsed:.0f} s: exit {code} {output}")
        if code == 0:
            return elapsed
        if elapsed > check["start_period"]:
            failures += 1
            if failures >= check["retries"]:
                raise DockerfileError(f"unhealthy: {failures} failed health checks after the "
                                      "start period")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--context", required=True)
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--bundle", default="")
    args = parser.parse_args()
    with open("/etc/os-release") as f:
        if 'VERSION_ID="12"' not in f.read():
            raise DockerfileError("this machine is not Debian 12, so it cannot stand in for the "
                                  "Dockerfile's debian:12 base images")
    started = time.monotonic()
    stage = execute(args.dockerfile, args.context, args.work)
    start_and_check(stage, args.work, args.bundle)
    log(f"PASS in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except DockerfileError as e:
        log(f"FAIL: {e}")
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        log(f"FAIL: {' '.join(map(str, e.cmd))} exited {e.returncode}")
        sys.exit(1)
