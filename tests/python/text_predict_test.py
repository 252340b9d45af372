"""A text model from a client that is not the project's own: Python grpcio with stubs generated
from proto/strata/v1/strata.proto at test time, against a real strata-server serving a text bundle
(strata-train with a `text` spec over all-MiniLM-L6-v2 from .tools/models) as the named model
"news" beside an image model (the default).

Checks: ModelInfo of both models, text Predict by name, an Update that teaches a new label, and the
promises of Sample.text for any bytes: non-UTF-8 (sent raw, as protobuf will not encode it) is
INVALID_ARGUMENT naming the field and the byte offset, and nothing changes.

Usage: text_predict_test.py BUILD_DIR SOURCE_DIR
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bad_input_test as base  # noqa: E402  (stub generation, raw protobuf encoding, free port)
from strata_server import TRAIN_TEXTS as TRAIN, train_text_bundle  # noqa: E402


class TextPredictTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="strata-text-predict-")
        base.generate_stubs(os.path.join(cls.dir, "gen"))
        cls.pb = base.pb
        train_text_bundle(base.BUILD_DIR, base.SOURCE_DIR, f"{cls.dir}/text.bundle")
        run = lambda *args: subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        run(f"{base.BUILD_DIR}/bin/strata-train", f"--spec={base.SOURCE_DIR}/specs/small.spec",
            "--train_limit=500", "--test=", f"--out={cls.dir}/image.bundle")
        port = base.free_port()
        cls.log = open(os.path.join(cls.dir, "server.log"), "w")
        cls.server = subprocess.Popen(
            [f"{base.BUILD_DIR}/bin/strata-server", f"--bundle={cls.dir}/image.bundle",
             f"--model=news={cls.dir}/text.bundle", f"--address=127.0.0.1:{port}",
             f"--state_dir={cls.dir}/state"], stdout=cls.log, stderr=cls.log)
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        pb = cls.pb
        cls.predict = cls.channel.unary_unary(
            "/strata.v1.Strata/Predict", request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString)
        cls.raw_predict = cls.channel.unary_unary("/strata.v1.Strata/Predict")
        cls.info = cls.channel.unary_unary(
            "/strata.v1.Strata/GetModelInfo",
            request_serializer=pb.GetModelInfoRequest.SerializeToString,
            response_deserializer=pb.ModelInfo.FromString)
        cls.update = cls.channel.stream_unary(
            "/strata.v1.Strata/Update", request_serializer=pb.UpdateRequest.SerializeToString,
            response_deserializer=pb.UpdateSummary.FromString)
        deadline = time.time() + 120
        while True:  # UNAVAILABLE until the models are loaded
            try:
                cls.info(pb.GetModelInfoRequest(model="news"), timeout=10)
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.time() > deadline:
                    raise
                time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.send_signal(signal.SIGTERM)
        cls.server.wait(timeout=60)
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def texts_request(self, texts, model="news"):
        return self.pb.PredictRequest(samples=[self.pb.Sample(text=t) for t in texts], model=model)

    def test_model_info_of_both_models(self):
        pb = self.pb
        image = self.info(pb.GetModelInfoRequest())
        self.assertEqual((image.name, image.input_kind, image.input_size), ("strata", "image", 784))
        self.assertEqual(list(image.served_models), ["strata", "news"])
        news = self.info(pb.GetModelInfoRequest(model="news"))
        self.assertEqual((news.name, news.input_kind, news.max_text_bytes, news.max_text_tokens),
                         ("news", "text", 200, 64))
        self.assertEqual(list(news.labels), ["sport", "food", "computers"])
        with self.assertRaises(grpc.RpcError) as caught:
            self.info(pb.GetModelInfoRequest(model="sports"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn('"sports"', caught.exception.details())

    def test_predict_and_update_texts(self):
        texts = [text for _, text in TRAIN]
        response = self.predict(self.texts_request(texts))
        self.assertEqual([p.label for p in response.predictions], [label for label, _ in TRAIN])
        weather = ["Heavy rain and strong winds tomorrow.", "Sunny and warm all weekend.",
                   "Snow is falling in the mountains tonight.", "A thunderstorm moves in."]
        pb = self.pb
        message = pb.UpdateRequest(
            model="news", samples=[pb.LabeledSample(label="weather", sample=pb.Sample(text=t))
                                   for t in weather])
        summary = self.update(iter([message]))
        self.assertEqual((summary.accepted, list(summary.new_labels)), (4, ["weather"]))
        response = self.predict(self.texts_request(["Fog in the morning, clear skies later."]))
        self.assertEqual(response.predictions[0].label, "weather")

    def test_bad_text_bytes_are_refused_and_change_nothing(self):
        pb = self.pb
        before = self.info(pb.GetModelInfoRequest(model="news"))
        good = pb.Sample(text="fine").SerializeToString()
        bad = base.length_delimited(3, "café".encode()[:-1] + b"\xff")  # Sample.text, not UTF-8
        request = (base.length_delimited(1, good) + base.length_delimited(1, bad) +
                   base.length_delimited(3, b"news"))
        with self.assertRaises(grpc.RpcError) as caught:
            self.raw_predict(request, timeout=30)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("samples[1].text: not valid UTF-8 at byte 3", caught.exception.details())
        for texts, model, expected in [([""], "news", "samples[0].text: empty text"),
                                       (["x" * 201], "news", "samples[0].text: 201 bytes"),
                                       (["hello"], "", "samples[0].text: this model takes images")]:
            with self.assertRaises(grpc.RpcError) as caught:
                self.predict(self.texts_request(texts, model))
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(expected, caught.exception.details())
        after = self.info(pb.GetModelInfoRequest(model="news"))
        self.assertEqual((after.model_version, list(after.labels), after.samples_seen),
                         (before.model_version, list(before.labels), before.samples_seen))


if __name__ == "__main__":
    base.BUILD_DIR, base.SOURCE_DIR = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
