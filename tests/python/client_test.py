"""The Python client package (client/python, importable as `strata`) against a real strata-server.

The package under test is the one scripts/python-env.sh built and installed (its stubs generated
from proto/ by grpcio-tools at build time). Images are real Fashion-MNIST images.
"""

import grpc
import numpy as np
import pytest

import strata
from strata.v1 import strata_pb2
from strata_server import TRAIN_TEXTS, fashion_test_images, fashion_train_samples, metric_value

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def server(start_server):
    return start_server("--max_batch=64")


@pytest.fixture
def text_server(start_server, text_bundle):
    """The image model as the default and the text model as "news", on one server."""
    return start_server("--max_batch=64", f"--model=news={text_bundle}")


def test_stubs_are_generated_not_committed():
    # The generated module exists in the installed package and matches the proto's API.
    assert strata_pb2.DESCRIPTOR.package == "strata.v1"
    assert "Predict" in strata_pb2.DESCRIPTOR.services_by_name["Strata"].methods_by_name


def test_predict_uint8_float_and_scores(server):
    images = fashion_test_images(20)
    with strata.Client(server.address) as client:
        info = client.model_info()
        pixels = client.predict(images, return_scores=True)
        values = client.predict(images.astype(np.float32) / 255)
        square = client.predict(images.reshape(20, 28, 28))
    assert len(pixels.labels) == 20
    assert all(label in info.labels for label in pixels.labels)
    assert [info.labels[i] for i in pixels.class_indices] == pixels.labels
    assert pixels.scores.shape == (20, len(info.labels))
    np.testing.assert_array_equal(np.argmax(pixels.scores, axis=1), pixels.class_indices)
    assert values.labels == pixels.labels and values.scores is None
    assert square.labels == pixels.labels
    assert pixels.model_version == info.model_version
    assert pixels.lower_tier_joules > 0 and pixels.upper_tier_joules > 0


def test_extract_features(server):
    with strata.Client(server.address) as client:
        features = client.extract_features(fashion_test_images(3))
        info = client.model_info()
    assert features.features.shape == (3, info.feature_size)
    assert features.features.dtype == np.float32
    assert np.isfinite(features.features).all() and np.abs(features.features).sum() > 0


def test_update_streams_an_iterator_in_batches(server):
    images, classes = fashion_train_samples(250, offset=5000)
    fed = []

    def samples():
        for image, cls in zip(images, classes):
            fed.append(cls)
            yield image, FASHION_CLASSES[cls]
        yield images[0], "a-new-label"

    with strata.Client(server.address) as client:
        before = client.model_info()
        summary = client.update(samples(), batch_size=100)
        after = client.model_info()
        stats = client.stats()
    assert len(fed) == 250  # the iterator was read to its end
    assert summary.accepted == 251 and summary.rejected == 0
    assert list(summary.new_labels) == ["a-new-label"]
    assert summary.model_version == after.model_version > before.model_version
    assert after.samples_seen == before.samples_seen + 251
    assert after.labels[-1] == "a-new-label"
    assert stats.samples_absorbed == 251


def test_update_rejections_are_listed(server):
    good = fashion_test_images(2)
    with strata.Client(server.address) as client:
        summary = client.update([(good[0], "Bag"), (good[1][:700], "Bag"), (good[1], "")],
                                batch_size=2)
    assert summary.accepted == 1 and summary.rejected == 2
    reasons = [(r.message_index, r.sample_index, r.reason) for r in summary.rejections]
    assert reasons[0][:2] == (0, 1) and "expected 784 bytes, got 700" in reasons[0][2]
    assert reasons[1][:2] == (1, 0) and "label" in reasons[1][2]


def test_errors_carry_the_code_and_the_servers_message(server):
    with strata.Client(server.address) as client:
        with pytest.raises(strata.StrataError) as wrong_size:
            client.predict(np.zeros((2, 700), np.uint8))
        with pytest.raises(strata.StrataError) as too_many:
            client.predict(np.zeros((65, 784), np.uint8))
        with pytest.raises(TypeError, match="int32"):
            client.predict(np.zeros((1, 784), np.int32))
        with pytest.raises(TypeError, match="int32"):
            client.update([(np.zeros(784, np.int32), "Bag")])
        with pytest.raises(strata.StrataError) as no_snapshot:
            client.snapshot()
    assert wrong_size.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert wrong_size.value.message == "samples[0].pixels: expected 784 bytes, got 700"
    assert too_many.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_batch" in too_many.value.message
    assert no_snapshot.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_unreachable_server_is_unavailable():
    with strata.Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(strata.StrataError) as error:
            client.model_info()
    assert error.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_token(start_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("python-token")
    server = start_server(f"--auth_token_file={token_file}")
    images = fashion_test_images(1)
    with strata.Client(server.address) as anonymous:
        assert len(anonymous.predict(images).labels) == 1  # reads need no token by default
        with pytest.raises(strata.StrataError) as refused:
            anonymous.update([(images[0], "Bag")])
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    with strata.Client(server.address, token="python-token") as client:
        assert client.update([(images[0], "Bag")]).accepted == 1


def test_tls_with_a_root_certificate(start_server, tls_files):
    cert, key = tls_files
    server = start_server(f"--tls_cert={cert}", f"--tls_key={key}",
                          health_flags=("--tls", f"--tls_ca={cert}"))
    with strata.Client(f"localhost:{server.port}", root_certificates=cert) as client:
        assert client.model_info().input_size == 784
    with strata.Client(f"localhost:{server.port}", timeout=5) as plaintext:
        with pytest.raises(strata.StrataError) as error:
            plaintext.model_info()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


# ---- text models and model names --------------------------------------------------------------

def test_texts_by_model_name(text_server):
    texts = [text for _, text in TRAIN_TEXTS]
    with strata.Client(text_server.address) as client:
        info = client.model_info(model="news")
        default = client.model_info()
        one = client.predict(texts[0], model="news")
        many = client.predict(texts, model="news", return_scores=True)
        features = client.extract_features(texts[:2], model="news")
        scrape, news_stats = text_server.metrics(), client.stats(model="news")
    assert (info.name, info.input_kind, info.max_text_bytes) == ("news", "text", 200)
    assert sorted(info.served_models) == ["news", "strata"]
    assert (default.name, default.input_kind) == ("strata", "image")
    # The training texts come back with their labels (a ridge fit of 9 texts in 640 dimensions).
    assert many.labels == [label for label, _ in TRAIN_TEXTS]
    assert one.labels == many.labels[:1]
    assert many.scores.shape == (len(texts), 3)
    assert features.features.shape == (2, info.feature_size)
    assert many.lower_tier_joules > 0
    # Each model has its own series in /metrics, equal to its own GetStats.
    assert metric_value(scrape, 'strata_model_version{model="news"}') == info.model_version
    assert metric_value(scrape, 'strata_model_version{model="strata"}') == default.model_version
    news_lower = metric_value(
        scrape, 'strata_energy_joules_total{model="news",phase="lower_tier_inference",tier="lower"}')
    assert news_lower > 0
    assert news_lower == pytest.approx(news_stats.energy.lower_tier_inference_joules, rel=1e-9)
    assert metric_value(scrape, 'strata_energy_joules_total{model="strata",'
                                'phase="lower_tier_inference",tier="lower"}') == 0


def test_text_update_teaches_a_new_label(text_server):
    weather = ["Heavy rain and strong winds are expected tomorrow.",
               "The forecast says sunshine with a light breeze.",
               "Snow fell overnight and the roads are icy."]
    with strata.Client(text_server.address) as client:
        before = client.model_info(model="news")
        summary = client.update(((text, "weather") for text in weather), batch_size=2,
                                model="news")
        after = client.model_info(model="news")
        predicted = client.predict(weather, model="news")
        image_model = client.model_info()
    assert (summary.accepted, summary.rejected) == (3, 0)
    assert "weather" in summary.new_labels
    assert after.model_version > before.model_version
    assert list(after.labels) == list(before.labels) + ["weather"]
    assert predicted.labels == ["weather"] * 3
    assert "weather" not in image_model.labels  # the other model is untouched


def test_text_errors_name_the_field(text_server):
    with strata.Client(text_server.address) as client:
        with pytest.raises(strata.StrataError) as empty:
            client.predict([""], model="news")
        with pytest.raises(strata.StrataError) as long:
            client.predict(["x" * 201], model="news")
        with pytest.raises(strata.StrataError) as image_to_text:
            client.predict(fashion_test_images(1), model="news")
        with pytest.raises(strata.StrataError) as text_to_image:
            client.predict(["a text"])
        with pytest.raises(strata.StrataError) as unknown:
            client.predict(["a text"], model="nope")
    for error in (empty, long, image_to_text, text_to_image):
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT, error.value
        assert "samples[0]" in error.value.message, error.value.message
    assert "200" in long.value.message
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    assert '"nope"' in unknown.value.message and "news" in unknown.value.message
