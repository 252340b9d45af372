#!/usr/bin/env python3
"""deploy/dockerfile_steps.py (behind deploy/run-dockerfile-steps.sh) on small Dockerfiles: it
understands every instruction deploy/Dockerfile uses, fails loudly on one it does not know and on a
failing RUN step, runs steps as the USER, and keeps the steps' writes off the host.

The full run of deploy/Dockerfile (a complete build, then the server started and health-checked)
takes about 15 minutes on the 2-core machine, too long for the suite; docs/operations.md, "Running
the Dockerfile without Docker", has its command. The step tests need root and mount namespaces
(mounts, chroot), as the script itself does; they are skipped without them (a container).

Usage: dockerfile_steps_test.py SOURCE_DIR
"""
import os
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else
                         os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SOURCE, "deploy"))
import dockerfile_steps  # noqa: E402


class ParseTest(unittest.TestCase):
    def test_understands_the_real_dockerfile(self):
        instructions = dockerfile_steps.parse(os.path.join(SOURCE, "deploy", "Dockerfile"))
        keywords = [keyword for _, keyword, _ in instructions]
        self.assertEqual(keywords.count("FROM"), 2)
        for keyword in ("WORKDIR", "COPY", "RUN", "USER", "VOLUME", "HEALTHCHECK", "ENTRYPOINT",
                        "CMD"):
            self.assertIn(keyword, keywords)
        # The runtime stage's apt step is recognised, with its package list.
        apt = [dockerfile_steps.apt_install_packages(text)
               for _, keyword, text in instructions if keyword == "RUN"]
        self.assertIn("libgrpc++1.51", [p for packages in apt if packages for p in packages])

    def test_continuations_and_comments(self):
        with tempfile.NamedTemporaryFile("w", suffix="Dockerfile") as f:
            f.write("FROM debian:12\n# a comment\nRUN echo a \\\n# inside\n && echo b\n")
            f.flush()
            instructions = dockerfile_steps.parse(f.name)
        self.assertEqual([k for _, k, _ in instructions], ["FROM", "RUN"])
        self.assertEqual(instructions[1][0], 3)
        self.assertEqual(instructions[1][2], "echo a  && echo b")

    def test_unknown_instruction_fails(self):
        with tempfile.NamedTemporaryFile("w", suffix="Dockerfile") as f:
            f.write("FROM debian:12\nSHELL [\"/bin/bash\", \"-c\"]\n")
            f.flush()
            with self.assertRaisesRegex(dockerfile_steps.DockerfileError, "SHELL is not supported"):
                dockerfile_steps.parse(f.name)

    def test_durations(self):
        self.assertEqual(dockerfile_steps.duration_seconds("1m30s", "x"), 90)
        with self.assertRaises(dockerfile_steps.DockerfileError):
            dockerfile_steps.duration_seconds("10 s", "x")


def can_make_mount_namespaces():
    """Root can, except inside a container without CAP_SYS_ADMIN (a clean-room debian:12)."""
    if os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@unittest.skipUnless(can_make_mount_namespaces(),
                     "needs root and mount namespaces (unshare --mount), as the script does")
class StepsTest(unittest.TestCase):
    def run_steps(self, dockerfile_text):
        with tempfile.TemporaryDirectory(prefix="strata_dockerfile_steps_test.") as context:
            dockerfile = os.path.join(context, "Dockerfile")
            with open(dockerfile, "w") as f:
                f.write(dockerfile_text)
            work = os.path.join(context, "work")
            os.makedirs(work)
            result = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "python3",
                 os.path.join(SOURCE, "deploy", "dockerfile_steps.py"), f"--work={work}",
                 f"--context={context}", f"--dockerfile={dockerfile}"],
                capture_output=True, text=True)
            # The mounts died with the namespace: only plain directories remain to delete.
            subprocess.run(["rm", "-rf", "--one-file-system", work], check=True)
            return result.returncode, result.stdout + result.stderr

    def test_failing_run_step_fails(self):
        code, output = self.run_steps("FROM debian:12-slim\nRUN echo first && false\n")
        self.assertEqual(code, 1, output)
        self.assertIn("Dockerfile:2: RUN failed with exit status 1", output)

    def test_user_and_writes_stay_off_the_host(self):
        probe = f"/etc/strata-dockerfile-steps-probe-{os.getpid()}"
        code, output = self.run_steps(
            f"FROM debian:12-slim\nRUN echo written > {probe} && test \"$(id -u)\" = 0\n"
            "USER 10001:10001\nRUN test \"$(id -u):$(id -g)\" = 10001:10001 && "
            f"! touch /etc/not-writable-as-10001\nRUN false\n")
        # The third RUN fails on purpose: the run stops there, after the two that must pass.
        self.assertEqual(code, 1, output)
        self.assertIn("Dockerfile:5: RUN failed", output)
        self.assertNotIn("Dockerfile:2: RUN failed", output)
        self.assertNotIn("Dockerfile:4: RUN failed", output)
        self.assertFalse(os.path.exists(probe), "a RUN step wrote to the host's /etc")


if __name__ == "__main__":
    unittest.main()
