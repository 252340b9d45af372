"""deploy/grafana/strata-dashboard.json queries only metrics a real strata-server exports.

Every metric name in the dashboard's queries (panel targets and template variables) must appear in
the /metrics output of a real server after Predict, KServe ModelInfer and Update traffic; and the
dashboard must cover what operators watch: Predict rate and latency, batch sizes, absorbs,
refreshes and joules by tier.
"""

import json
import os
import re

import tritonclient.grpc as triton

import strata
from strata_server import fashion_test_images

METRIC = re.compile(r"\bstrata_[a-z0-9_]+\b")


def dashboard(source_dir):
    with open(os.path.join(source_dir, "deploy/grafana/strata-dashboard.json")) as f:
        return json.load(f)


def queries(board):
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"]["query"]


def exported_names(scrape):
    """Series names in a Prometheus text exposition (histograms as _bucket, _sum, _count)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0]
            for line in scrape.splitlines() if line and not line.startswith("#")}


def test_dashboard_is_well_formed(source_dir):
    board = dashboard(source_dir)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_every_queried_metric_is_exported(source_dir, start_server):
    server = start_server("--update_policy=eager")
    images = fashion_test_images(8)
    with strata.Client(server.address) as client:
        client.predict(images)
        client.update([(image, "Bag") for image in images], batch_size=4)
    kserve = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("image", [2, 784], "UINT8")
    tensor.set_data_from_numpy(images[:2])
    kserve.infer("strata", [tensor])
    kserve.close()
    exported = exported_names(server.metrics())

    queried = {}
    for where, expr in queries(dashboard(source_dir)):
        for name in METRIC.findall(expr):
            queried.setdefault(name, where)
    missing = {name: where for name, where in queried.items() if name not in exported}
    assert not missing, f"queried but not exported: {missing}"
    # What the dashboard is for.
    for name in ["strata_rpc_requests_total", "strata_rpc_latency_seconds_bucket",
                 "strata_predict_batch_images_sum", "strata_lower_tier_batch_rows_bucket",
                 "strata_samples_absorbed_total", "strata_refreshes_total",
                 "strata_energy_joules_total"]:
        assert name in queried, name
    exprs = " ".join(expr for _, expr in queries(dashboard(source_dir)))
    assert 'method=~"Predict|ModelInfer"' in exprs and "sum by (tier)" in exprs
