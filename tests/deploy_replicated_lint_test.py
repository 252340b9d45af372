#!/usr/bin/env python3
"""Schema checks of replicated mode's deployment files (docs/replication.md): deploy/nats/nats.conf,
deploy/compose-replicated.yaml and deploy/k8s/replicated/*.yaml.

No container engine or cluster runs here (as in deploy_lint_test.py): this checks that the files
agree with each other and with strata-server: three NATS nodes routed to every node, the config the
Kubernetes ConfigMap carries equal to deploy/nats/nats.conf, replicas pointing at every NATS node
with distinct ids, no state directory, --max_message_bytes within half the NATS max_payload, every
flag one strata-server defines, readiness on strata.v1.Strata.

Usage: deploy_replicated_lint_test.py SOURCE_DIR
"""
import os
import re
import sys
import unittest

import yaml

SOURCE = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
DEPLOY = os.path.join(SOURCE, "deploy")


def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def server_flags():
    with open(os.path.join(SOURCE, "server", "main.cc")) as f:
        return set(re.findall(r"ABSL_FLAG\([^,]+,\s*(\w+)", f.read()))


def flags(args):
    out = {}
    for a in args:
        m = re.match(r"--(\w+)(?:=(.*))?$", a)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def nats_conf():
    with open(os.path.join(DEPLOY, "nats", "nats.conf")) as f:
        return f.read()


def conf_lines(text):
    return [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


def max_payload(text):
    return int(re.search(r"max_payload:\s*(\d+)", text).group(1))


class ReplicaFlagsMixin:
    def check_replica_args(self, args, nats_hosts, where):
        f = flags(args)
        self.assertLessEqual(set(f), server_flags(), where)
        self.assertNotIn("state_dir", f, where)
        servers = f["nats_servers"].split(",")
        self.assertEqual(sorted(re.match(r"nats://([\w.-]+):4222$", s).group(1) for s in servers),
                         sorted(nats_hosts), where)
        self.assertLessEqual(int(f["max_message_bytes"]), max_payload(nats_conf()) // 2, where)
        return f


class ComposeTest(unittest.TestCase, ReplicaFlagsMixin):
    def setUp(self):
        (self.doc,) = load_all(os.path.join(DEPLOY, "compose-replicated.yaml"))
        self.services = self.doc["services"]

    def test_three_nats_nodes_routed_to_each_other(self):
        nats = sorted(n for n in self.services if n.startswith("nats-"))
        self.assertEqual(len(nats), 3)
        for name in nats:
            service = self.services[name]
            self.assertEqual(service["environment"]["SERVER_NAME"], name)
            routes = re.findall(r"nats://([\w-]+):6222", service["environment"]["ROUTES"])
            self.assertEqual(sorted(routes), nats)
            mounts = [v.split(":")[1] for v in service["volumes"]]
            self.assertIn("/data", mounts)
            self.assertIn("/etc/nats/nats.conf", mounts)

    def test_replicas_share_the_cluster_with_distinct_ids_and_ports(self):
        nats = [n for n in self.services if n.startswith("nats-")]
        strata = sorted(n for n in self.services if n.startswith("strata-"))
        self.assertEqual(len(strata), 3)
        ids, ports = set(), set()
        for name in strata:
            service = self.services[name]
            f = self.check_replica_args(service["command"], nats, name)
            ids.add(f["replica_id"])
            ports.update(service["ports"])
            self.assertIn("healthcheck", service)
        self.assertEqual(len(ids), 3)
        self.assertEqual(len(ports), 3)
        self.assertEqual(sum("build" in self.services[n] for n in strata), 1, "one builds the image")


class KubernetesTest(unittest.TestCase, ReplicaFlagsMixin):
    def setUp(self):
        self.docs = []
        for name in ("nats.yaml", "strata.yaml"):
            self.docs += load_all(os.path.join(DEPLOY, "k8s", "replicated", name))
        self.by_kind = {}
        for d in self.docs:
            self.assertIn("metadata", d)
            self.by_kind.setdefault(d["kind"], []).append(d)

    def test_statefulset_of_three_with_jetstream_volumes(self):
        (sts,) = self.by_kind["StatefulSet"]
        spec = sts["spec"]
        self.assertEqual(spec["replicas"], 3)
        self.assertEqual(spec["podManagementPolicy"], "Parallel")
        (container,) = spec["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        routes = re.findall(r"nats://(nats-\d+)\.nats:6222", env["ROUTES"]["value"])
        self.assertEqual(routes, ["nats-%d" % i for i in range(3)])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        self.assertEqual(mounts["/data"], spec["volumeClaimTemplates"][0]["metadata"]["name"])
        headless = [s for s in self.by_kind["Service"] if s["metadata"]["name"] == spec["serviceName"]]
        self.assertEqual(headless[0]["spec"]["clusterIP"], "None")

    def test_configmap_is_deploy_nats_conf(self):
        (config,) = self.by_kind["ConfigMap"]
        self.assertEqual(conf_lines(config["data"]["nats.conf"]), conf_lines(nats_conf()))

    def test_replicas_point_at_every_nats_pod(self):
        (deployment,) = self.by_kind["Deployment"]
        self.assertGreaterEqual(deployment["spec"]["replicas"], 2)
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        self.check_replica_args(container["args"], ["nats-%d.nats" % i for i in range(3)],
                                "strata.yaml")
        env = {e["name"] for e in container["env"]}
        self.assertIn("POD_NAME", env)
        self.assertIn("--replica_id=$(POD_NAME)", container["args"])
        self.assertEqual(container["readinessProbe"]["grpc"]["service"], "strata.v1.Strata")
        services = [s for s in self.by_kind["Service"]
                    if s["metadata"]["name"] == deployment["metadata"]["name"]]
        self.assertEqual(services[0]["spec"]["selector"], template["metadata"]["labels"])


if __name__ == "__main__":
    unittest.main()
