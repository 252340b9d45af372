"""Every bad input the strata.v1 proto mentions, sent by a client that is not the project's own.

The client is Python grpcio with stubs generated from proto/strata/v1/strata.proto at test time
(Debian's protoc and grpc_python_plugin), against a real strata-server. Requests that protobuf
cannot even encode (unparseable bytes, a non-UTF-8 label) are sent as raw bytes through generic
method handles, as any client can. For each bad input the test checks the status code, that the
message names the field (or the limit), and that the server's state is unchanged afterwards:
model version, labels and samples seen from GetModelInfo, and the Stats counters moving exactly by
what the call should count.

Usage: bad_input_test.py BUILD_DIR SOURCE_DIR
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

BUILD_DIR = None
SOURCE_DIR = None
pb = None  # the generated strata_pb2 module

MAX_MESSAGE_BYTES = 200_000  # the server's --max_message_bytes
TRANSPORT_LIMIT = 4 * MAX_MESSAGE_BYTES  # gRPC's own limit (server/service.h TransportMessageLimit)
MAX_BATCH = 64
INPUT_SIZE = 784


def generate_stubs(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(
        ["protoc", f"-I{SOURCE_DIR}/proto", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", "strata/v1/strata.proto"],
        check=True)
    sys.path.insert(0, out_dir)
    global pb
    from strata.v1 import strata_pb2
    pb = strata_pb2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def sample(label="shirt", pixels=None):
    return pb.LabeledSample(sample=pb.Sample(pixels=bytes(INPUT_SIZE) if pixels is None else pixels),
                            label=label)


def update_message(n, label="shirt"):
    return pb.UpdateRequest(samples=[sample(label, bytes([i % 256]) * INPUT_SIZE)
                                     for i in range(n)]).SerializeToString()


def raw_sample_with_label_bytes(label_bytes):
    """A LabeledSample whose label is arbitrary bytes (protobuf refuses to encode non-UTF-8)."""
    return (length_delimited(1, pb.Sample(pixels=bytes(INPUT_SIZE)).SerializeToString()) +
            length_delimited(2, label_bytes))


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="strata-bad-input-")
        generate_stubs(os.path.join(cls.dir, "gen"))
        bundle = os.path.join(cls.dir, "model.bundle")
        subprocess.run([f"{BUILD_DIR}/bin/strata-train", f"--spec={SOURCE_DIR}/specs/small.spec",
                        "--train_limit=1000", "--test=", f"--out={bundle}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        cls.log = open(os.path.join(cls.dir, "server.log"), "w")
        cls.server = subprocess.Popen(
            [f"{BUILD_DIR}/bin/strata-server", f"--bundle={bundle}", f"--address=127.0.0.1:{port}",
             f"--state_dir={cls.dir}/state", f"--max_message_bytes={MAX_MESSAGE_BYTES}",
             f"--max_batch={MAX_BATCH}"], stdout=cls.log, stderr=cls.log)
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                            options=[("grpc.max_send_message_length", -1)])
        grpc.channel_ready_future(cls.channel).result(timeout=60)
        raw = lambda m: cls.channel.unary_unary(f"/strata.v1.Strata/{m}")
        cls.raw = {m: raw(m) for m in ["Predict", "ExtractFeatures", "GetModelInfo", "GetStats",
                                       "Snapshot"]}
        cls.raw_update = cls.channel.stream_unary("/strata.v1.Strata/Update")
        cls.info_rpc = cls.channel.unary_unary("/strata.v1.Strata/GetModelInfo",
                                               response_deserializer=pb.ModelInfo.FromString)
        cls.stats_rpc = cls.channel.unary_unary("/strata.v1.Strata/GetStats",
                                                response_deserializer=pb.Stats.FromString)
        deadline = time.time() + 60
        while True:  # UNAVAILABLE until the model is loaded
            try:
                cls.info_rpc(b"")
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.time() > deadline:
                    raise

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.send_signal(signal.SIGTERM)
        cls.server.wait(timeout=60)
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------------

    def state(self):
        info = self.info_rpc(b"")
        return (info.model_version, tuple(info.labels), info.samples_seen)

    def stats(self):
        return self.stats_rpc(b"")

    def update(self, messages):
        """Sends raw messages as one Update stream; returns the parsed summary."""
        reply = self.raw_update(iter(messages), timeout=60)
        return pb.UpdateSummary.FromString(reply)

    def assert_unary_fails(self, method, request_bytes, code, *names):
        """The call fails with `code`, its message names each of `names`, nothing changes, and
        Stats counts it as failed (for the methods Stats counts)."""
        before_state, before = self.state(), self.stats()
        with self.assertRaises(grpc.RpcError) as caught:
            self.raw[method](request_bytes, timeout=30)
        error = caught.exception
        self.assertEqual(error.code(), code, error.details())
        for name in names:
            self.assertIn(name, error.details())
        self.assertEqual(self.state(), before_state)
        after = self.stats()
        counted = {"Predict": "predict", "ExtractFeatures": "extract_features",
                   "GetModelInfo": "get_model_info"}.get(method)
        if counted:
            self.assertEqual(getattr(after, counted).failed, getattr(before, counted).failed + 1,
                             f"{method}: Stats.{counted}.failed did not count the call")
            # (this helper's own state() check is one GetModelInfo call)
            own_calls = 1 if method == "GetModelInfo" else 0
            self.assertEqual(getattr(after, counted).ok, getattr(before, counted).ok + own_calls)
        self.assertEqual(after.samples_predicted, before.samples_predicted)
        self.assertEqual(after.samples_extracted, before.samples_extracted)
        self.assertEqual(after.samples_absorbed, before.samples_absorbed)
        return error.details()

    # ---- unary calls -----------------------------------------------------------------------------

    def test_unparseable_unary_requests_are_invalid_argument_naming_the_field(self):
        truncated = b"\x0a\xff\xff"  # samples: a length that runs past the end
        for method in ["Predict", "ExtractFeatures"]:
            self.assert_unary_fails(method, truncated, grpc.StatusCode.INVALID_ARGUMENT,
                                    "cannot parse", "samples[0]")
            # samples[1].values.values: packed floats of 7 bytes (not a multiple of 4).
            values = length_delimited(1, b"\x00" * 7)
            bad_floats = (length_delimited(1, pb.Sample(pixels=bytes(INPUT_SIZE)).SerializeToString())
                          + length_delimited(1, length_delimited(2, values)))
            self.assert_unary_fails(method, bad_floats, grpc.StatusCode.INVALID_ARGUMENT,
                                    "samples[1].values.values", "4 bytes each, got 7")
            self.assert_unary_fails(method, b"\x07", grpc.StatusCode.INVALID_ARGUMENT,
                                    "cannot parse")  # an invalid wire type
        for method in ["GetModelInfo", "GetStats", "Snapshot"]:
            self.assert_unary_fails(method, b"\x0a\x05ab", grpc.StatusCode.INVALID_ARGUMENT,
                                    "cannot parse")

    def test_bad_samples_in_unary_requests(self):
        def req(*samples):
            return pb.PredictRequest(samples=list(samples)).SerializeToString()
        for method in ["Predict", "ExtractFeatures"]:
            self.assert_unary_fails(method, req(), grpc.StatusCode.INVALID_ARGUMENT, "samples")
            self.assert_unary_fails(method, req(pb.Sample(pixels=bytes(780))),
                                    grpc.StatusCode.INVALID_ARGUMENT, "samples[0].pixels", "784")
            nan = [0.0] * INPUT_SIZE
            nan[17] = float("nan")
            self.assert_unary_fails(method, req(pb.Sample(pixels=bytes(INPUT_SIZE)),
                                                pb.Sample(values=pb.FloatVector(values=nan))),
                                    grpc.StatusCode.INVALID_ARGUMENT, "samples[1].values.values[17]")
            self.assert_unary_fails(method, req(pb.Sample()), grpc.StatusCode.INVALID_ARGUMENT,
                                    "samples[0]")
            self.assert_unary_fails(method, req(*[pb.Sample(pixels=bytes(INPUT_SIZE))] * (MAX_BATCH + 1)),
                                    grpc.StatusCode.RESOURCE_EXHAUSTED, "samples", str(MAX_BATCH))

    def test_message_over_the_limit_is_resource_exhausted_and_counted(self):
        big = pb.PredictRequest(samples=[pb.Sample(pixels=bytes(INPUT_SIZE))] * 300).SerializeToString()
        self.assertGreater(len(big), MAX_MESSAGE_BYTES)
        self.assertLess(len(big), TRANSPORT_LIMIT)
        self.assert_unary_fails("Predict", big, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                str(MAX_MESSAGE_BYTES), "--max_message_bytes")

    # ---- Update ----------------------------------------------------------------------------------

    def assert_update(self, messages, accepted, rejected, reasons):
        """One stream of `messages`: its summary counts `accepted` and `rejected`, lists each
        (message_index, sample_index, text) of `reasons`, and the model absorbed exactly the
        accepted samples (published once, under the default stream-end policy)."""
        version, labels, seen = self.state()
        before = self.stats()
        # Samples absorbed by earlier failed streams but not yet published join this publish.
        pending = before.pending_samples
        summary = self.update(messages)
        self.assertEqual((summary.accepted, summary.rejected), (accepted, rejected), summary)
        listed = [(r.message_index, r.sample_index, r.reason) for r in summary.rejections]
        self.assertEqual(len(listed), len(reasons), listed)
        for (m, s, reason), (em, es, text) in zip(listed, reasons):
            self.assertEqual((m, s), (em, es), reason)
            self.assertIn(text, reason)
        after_version, after_labels, after_seen = self.state()
        self.assertEqual(after_seen, seen + (pending + accepted if accepted else 0))
        # New classes only from accepted samples, appended in order.
        self.assertEqual(after_labels, labels + tuple(summary.new_labels))
        self.assertTrue(set(summary.new_labels).isdisjoint(labels))
        self.assertEqual(after_version, version + (1 if accepted else 0))
        after = self.stats()
        self.assertEqual(after.samples_absorbed, before.samples_absorbed + accepted)
        self.assertEqual(after.samples_rejected, before.samples_rejected + rejected)
        self.assertEqual(after.update.ok, before.update.ok + 1)
        return summary

    def test_unparseable_message_mid_stream_is_rejected_and_the_stream_goes_on(self):
        # [5 good][a message whose framing is broken][5 good]: 10 absorbed, 1 rejected.
        self.assert_update([update_message(5), b"\x0a\x05\xff", update_message(5)], 10, 1,
                           [(1, 0, "samples[0]")])

    def test_unparseable_sample_costs_only_itself(self):
        good = pb.LabeledSample(sample=pb.Sample(pixels=bytes(INPUT_SIZE)), label="shirt")
        message = (length_delimited(1, good.SerializeToString()) +
                   length_delimited(1, raw_sample_with_label_bytes(b"\xff\xfe")) +
                   length_delimited(1, good.SerializeToString()))
        self.assert_update([update_message(3), message, update_message(2)], 7, 1,
                           [(1, 1, "samples[1].label: not valid UTF-8")])

    def test_non_utf8_label_alone_is_rejected_naming_the_label(self):
        message = length_delimited(1, raw_sample_with_label_bytes(b"caf\xe9"))
        self.assert_update([message], 0, 1, [(0, 0, "samples[0].label: not valid UTF-8")])

    def test_bad_samples_are_rejected_and_listed(self):
        nan = [0.5] * INPUT_SIZE
        nan[3] = float("inf")
        message = pb.UpdateRequest(samples=[
            sample("ok"), sample(""), sample("x" * 257), sample("ok", bytes(10)),
            pb.LabeledSample(sample=pb.Sample(values=pb.FloatVector(values=nan)), label="ok"),
            pb.LabeledSample(label="ok"), sample("ok")]).SerializeToString()
        self.assert_update([message, pb.UpdateRequest().SerializeToString()], 2, 6, [
            (0, 1, "samples[1].label"), (0, 2, "samples[2].label"), (0, 3, "samples[3].sample.pixels"),
            (0, 4, "samples[4].sample.values.values[3]"), (0, 5, "samples[5].sample"),
            (1, -1, "empty message")])
        self.assertIn("ok", self.state()[1])

    def test_message_over_the_limit_is_rejected_and_the_stream_goes_on(self):
        big = update_message(300)
        self.assertGreater(len(big), MAX_MESSAGE_BYTES)
        self.assertLess(len(big), TRANSPORT_LIMIT)
        self.assert_update([update_message(5), big, update_message(5)], 10, 1,
                           [(1, -1, f"over the server's message-size limit of {MAX_MESSAGE_BYTES}")])

    def test_message_over_the_transport_limit_fails_the_stream_and_publishes_nothing(self):
        huge = update_message(1100)
        self.assertGreater(len(huge), TRANSPORT_LIMIT)
        for _ in range(10):
            version, labels, seen = self.state()
            before = self.stats()
            with self.assertRaises(grpc.RpcError) as caught:
                self.update([update_message(5), huge, update_message(5)])
            self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            time.sleep(0.3)  # a wrongly published version would appear by now
            after_version, _, after_seen = self.state()
            self.assertEqual(after_version, version, "a failed stream published a version")
            after = self.stats()
            self.assertEqual(after.update.ok, before.update.ok)
            self.assertEqual(after.update.failed, before.update.failed + 1)
            # The first message was absorbed (its samples take effect with the next version).
            self.assertLessEqual(after.samples_absorbed, before.samples_absorbed + 5)

    def test_stream_without_samples_is_invalid_argument(self):
        before = self.stats()
        with self.assertRaises(grpc.RpcError) as caught:
            self.update([])
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("no samples", caught.exception.details())
        self.assertEqual(self.stats().update.failed, before.update.failed + 1)


if __name__ == "__main__":
    BUILD_DIR, SOURCE_DIR = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
