"""The Python client package (client/python, importable as `strata`) against a real strata-server.

The package under test is the one scripts/python-env.sh built and installed (its stubs generated
from proto/ by grpcio-tools at build time). Images are real Fashion-MNIST images.
"""

import grpc
import numpy as np
import pytest

import strata
from strata.v1 import strata_pb2
from strata_server import fashion_test_images, fashion_train_samples

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def server(start_server):
    return start_server("--max_batch=64")


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
