#!/usr/bin/env python3
"""Schema checks of deploy/: the Dockerfile, compose.yaml and the Kubernetes manifests.

No Docker engine or cluster runs here, so this checks what can go wrong in the files themselves:
every YAML document parses (Debian's python3-yaml) and has the keys its kind requires, names that
refer to each other match (selectors and labels, volumes and mounts, claims, probe ports), the
Dockerfile is multi-stage from Debian 12, runs as a non-root user, keeps state in a volume and
checks health through the gRPC health service, and every binary the images use is a CMake target.

Usage: deploy_lint_test.py SOURCE_DIR
"""
import os
import re
import sys
import unittest

import yaml

SOURCE = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
DEPLOY = os.path.join(SOURCE, "deploy")
GRPC_PORT = 50051
STATE_DIR = "/var/lib/strata"


def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def cmake_targets():
    targets = set()
    for root, _, files in os.walk(SOURCE):
        if "/build" in root or "/.tools" in root:
            continue
        for name in files:
            if name == "CMakeLists.txt":
                with open(os.path.join(root, name)) as f:
                    targets.update(re.findall(r"add_executable\(\s*([\w-]+)", f.read()))
    return targets


def server_flags():
    with open(os.path.join(SOURCE, "server", "main.cc")) as f:
        return set(re.findall(r"ABSL_FLAG\([^,]+,\s*(\w+)", f.read()))


def flag_names(args):
    return {re.match(r"--(\w+)", a).group(1) for a in args if a.startswith("--")}


class DockerfileTest(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(DEPLOY, "Dockerfile")) as f:
            self.text = f.read()
        self.lines = [l.strip() for l in self.text.splitlines() if l.strip() and not l.startswith("#")]

    def test_multi_stage_debian12_build_and_slim_runtime(self):
        stages = [l for l in self.lines if l.startswith("FROM ")]
        self.assertEqual(stages[0], "FROM debian:12 AS build")
        self.assertEqual(stages[-1], "FROM debian:12-slim")
        self.assertIn("./scripts/setup.sh", self.text)

    def test_non_root_state_volume_health_check(self):
        user = [l for l in self.lines if l.startswith("USER ")]
        self.assertTrue(user, "no USER")
        self.assertNotIn(user[-1].split()[1].split(":")[0], ("root", "0"))
        self.assertIn('VOLUME ["%s"]' % STATE_DIR, self.text)
        health = [l for l in self.lines if l.startswith("HEALTHCHECK")]
        self.assertTrue(health)
        self.assertIn("strata health", self.text)
        self.assertIn("--state_dir=%s" % STATE_DIR, self.text)

    def test_binaries_are_cmake_targets_and_flags_exist(self):
        copied = re.findall(r"/build/bin/([\w-]+)", self.text)
        self.assertTrue(copied)
        self.assertLessEqual(set(copied), cmake_targets())
        cmd = re.search(r"^CMD (\[.*\])$", self.text, re.M)
        self.assertIsNotNone(cmd)
        self.assertLessEqual(flag_names(yaml.safe_load(cmd.group(1))), server_flags())


class ComposeTest(unittest.TestCase):
    def test_service_builds_the_dockerfile_with_state_volume_and_health(self):
        (doc,) = load_all(os.path.join(DEPLOY, "compose.yaml"))
        service = doc["services"]["strata"]
        build = service["build"]
        self.assertTrue(os.path.isfile(os.path.join(DEPLOY, build["context"], build["dockerfile"])))
        self.assertLessEqual(flag_names(service["command"]), server_flags())
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        self.assertIn(STATE_DIR, mounts)
        self.assertIn(mounts[STATE_DIR], doc["volumes"])
        self.assertEqual(service["healthcheck"]["test"][:3], ["CMD", "strata", "health"])
        self.assertIn("%d:%d" % (GRPC_PORT, GRPC_PORT), service["ports"])


class KubernetesTest(unittest.TestCase):
    def setUp(self):
        self.docs = []
        k8s = os.path.join(DEPLOY, "k8s")
        for name in sorted(os.listdir(k8s)):
            if name.endswith(".yaml"):
                self.docs += [(name, d) for d in load_all(os.path.join(k8s, name))]
        self.assertTrue(self.docs)

    def of_kind(self, kind):
        return [(n, d) for n, d in self.docs if d["kind"] == kind]

    def test_every_document_has_api_version_kind_and_name(self):
        for name, doc in self.docs:
            for key in ("apiVersion", "kind", "metadata", "spec"):
                self.assertIn(key, doc, name)
            self.assertTrue(doc["metadata"].get("name"), name)

    def test_deployments_are_consistent(self):
        claims = {d["metadata"]["name"] for _, d in self.of_kind("PersistentVolumeClaim")}
        deployments = self.of_kind("Deployment")
        self.assertTrue(deployments)
        alveo = False
        for name, d in deployments:
            self.assertEqual(d["apiVersion"], "apps/v1", name)
            spec = d["spec"]
            template = spec["template"]
            self.assertEqual(spec["replicas"], 1, "one writer of the state directory")
            self.assertEqual(spec["strategy"]["type"], "Recreate", name)
            labels = template["metadata"]["labels"]
            for k, v in spec["selector"]["matchLabels"].items():
                self.assertEqual(labels.get(k), v, name)
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            for volume in volumes.values():
                if "persistentVolumeClaim" in volume:
                    self.assertIn(volume["persistentVolumeClaim"]["claimName"], claims, name)
            (container,) = template["spec"]["containers"]
            self.assertTrue(container["image"])
            self.assertLessEqual(flag_names(container["args"]), server_flags(), name)
            ports = {p["containerPort"] for p in container["ports"]}
            self.assertIn(GRPC_PORT, ports)
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertEqual(container[probe]["grpc"]["port"], GRPC_PORT, (name, probe))
            self.assertEqual(container["readinessProbe"]["grpc"]["service"], "strata.v1.Strata")
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            for path, volume in mounts.items():
                self.assertIn(volume, volumes, (name, path))
            self.assertIn(STATE_DIR, mounts)
            self.assertIn("persistentVolumeClaim", volumes[mounts[STATE_DIR]])
            limits = container.get("resources", {}).get("limits", {})
            fpga = [r for r in limits if re.fullmatch(r"xilinx\.com/fpga-[\w.-]+-\d+(_\d+)?", r)]
            if fpga:
                alveo = True
                self.assertIn("/dev/dri", mounts)
                self.assertTrue(any(p.startswith("/dev/xclmgmt") for p in mounts))
        self.assertTrue(alveo, "no Deployment requests an Alveo card")

    def test_service_selects_the_deployment_and_its_grpc_port(self):
        (_, deployment), = [(n, d) for n, d in self.of_kind("Deployment")
                            if d["metadata"]["name"] == "strata"]
        services = self.of_kind("Service")
        self.assertTrue(services)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port_names = {p.get("name") for p in container["ports"]}
        for name, service in services:
            for k, v in service["spec"]["selector"].items():
                self.assertEqual(labels.get(k), v, name)
            for port in service["spec"]["ports"]:
                self.assertIn(port["targetPort"], port_names | {GRPC_PORT}, name)

    def test_metrics_port_matches_annotations_and_flag(self):
        # Where a Deployment asks Prometheus to scrape it, the annotated port is a container port
        # and the one --metrics_address listens on.
        for name, d in self.of_kind("Deployment"):
            annotations = d["spec"]["template"]["metadata"].get("annotations", {})
            if annotations.get("prometheus.io/scrape") != "true":
                continue
            (container,) = d["spec"]["template"]["spec"]["containers"]
            port = int(annotations["prometheus.io/port"])
            self.assertIn(port, {p["containerPort"] for p in container["ports"]}, name)
            address = [a for a in container["args"] if a.startswith("--metrics_address=")]
            self.assertEqual(len(address), 1, name)
            self.assertTrue(address[0].endswith(":%d" % port), (name, address))


if __name__ == "__main__":
    unittest.main(verbosity=2)
