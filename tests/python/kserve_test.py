"""The KServe v2 front-end against a real strata-server, through the real third-party client.

The client is Triton's tritonclient[grpc] from PyPI (InferenceServerClient), plus its own generated
stubs (tritonclient.grpc.service_pb2*) for what its helpers do not send: typed tensor contents and
malformed requests. Predictions are compared with strata.v1 Predict's (through the strata Python
client) on real Fashion-MNIST test images. Every error case checks the status code, that the
message names what was wrong, and that the server still answers.
"""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import strata
from strata_server import TRAIN_TEXTS, fashion_test_images, metric_value

MAX_BATCH = 64
MAX_MESSAGE_BYTES = 300_000
SERVER_FLAGS = (f"--max_batch={MAX_BATCH}", f"--max_message_bytes={MAX_MESSAGE_BYTES}")
MODEL = "strata"


def serve(build_dir, bundle, *flags):
    """A module's server: yields it serving, checks it exits 0 at the end."""
    from strata_server import StrataServer
    server = StrataServer(build_dir, bundle, *SERVER_FLAGS, *flags).wait_serving()
    yield server
    assert server.stop() == 0, server.log()


def triton_client(server):
    client = triton.InferenceServerClient(server.address)
    yield client
    client.close()


def kserve_stub(server):
    channel = grpc.insecure_channel(server.address)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def native_client(server):
    with strata.Client(server.address) as client:
        yield client


@pytest.fixture(scope="module")
def server(build_dir, bundle):
    yield from serve(build_dir, bundle)


@pytest.fixture(scope="module")
def kserve(server):
    yield from triton_client(server)


@pytest.fixture(scope="module")
def stub(server):
    yield from kserve_stub(server)


@pytest.fixture(scope="module")
def native(server):
    yield from native_client(server)


@pytest.fixture(scope="module")
def images():
    return fashion_test_images(40)


def image_input(array, datatype):
    tensor = triton.InferInput("image", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def outputs(*names):
    return [triton.InferRequestedOutput(name) for name in names]


def typed_request(array, datatype, output_names=(), **fields):
    """A ModelInferRequest with the image's elements in typed contents."""
    request = service_pb2.ModelInferRequest(model_name=MODEL, **fields)
    tensor = request.inputs.add(name="image", datatype=datatype, shape=list(array.shape))
    if datatype == "UINT8":
        tensor.contents.uint_contents.extend(array.reshape(-1).tolist())
    else:
        tensor.contents.fp32_contents.extend(array.reshape(-1).tolist())
    for name in output_names:
        request.outputs.add(name=name)
    return request


def expect_error(code, *words):
    """A context expecting an InferenceServerException or grpc.RpcError of `code` whose message
    holds every one of `words`."""
    class Expect:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, tb):
            assert error is not None, f"expected {code.name}, the call succeeded"
            if isinstance(error, InferenceServerException):
                got_code, message = error.status(), error.message()
                assert got_code == f"StatusCode.{code.name}", (got_code, message)
            elif isinstance(error, grpc.RpcError):
                got_code, message = error.code(), error.details()
                assert got_code == code, (got_code, message)
            else:
                return False
            for word in words:
                assert word in message, (word, message)
            return True
    return Expect()


# ---- probes and metadata ------------------------------------------------------------------------

def test_probes(kserve, native):
    assert kserve.is_server_live()
    assert kserve.is_server_ready()
    assert kserve.is_model_ready(MODEL)
    version = str(native.model_info().model_version)
    assert kserve.is_model_ready(MODEL, version)
    with expect_error(grpc.StatusCode.NOT_FOUND, '"other"', f'"{MODEL}"'):
        kserve.is_model_ready("other")
    with expect_error(grpc.StatusCode.NOT_FOUND, '"999999"', f"served version is {version}"):
        kserve.is_model_ready(MODEL, "999999")


def test_server_metadata(kserve):
    metadata = kserve.get_server_metadata()
    assert metadata.name == "strata"
    assert metadata.version == "0.1.0"
    assert list(metadata.extensions) == []


def test_repository_index_lists_the_served_model(kserve, stub, native):
    index = kserve.get_model_repository_index()
    assert [(m.name, m.version, m.state) for m in index.models] == [
        (MODEL, str(native.model_info().model_version), "READY")]
    ready_only = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    assert [m.name for m in ready_only.models] == [MODEL]
    with expect_error(grpc.StatusCode.NOT_FOUND, '"elsewhere"'):
        stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(repository_name="elsewhere"))


def test_model_metadata_describes_the_real_tensors(kserve, native):
    info = native.model_info()
    metadata = kserve.get_model_metadata(MODEL)
    assert metadata.name == MODEL
    assert list(metadata.versions) == [str(info.model_version)]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("image", "UINT8", [-1, info.input_size])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("label", "BYTES", [-1]), ("class_index", "INT64", [-1]),
        ("scores", "FP32", [-1, len(info.labels)])]
    with expect_error(grpc.StatusCode.NOT_FOUND, '"nope"'):
        kserve.get_model_metadata("nope")
    with expect_error(grpc.StatusCode.NOT_FOUND, '"0"'):
        kserve.get_model_metadata(MODEL, "0")


# ---- ModelInfer: the same answers as strata.v1 Predict --------------------------------------------

def assert_same_as_predict(native, images, labels, class_index, scores=None):
    expected = native.predict(images, return_scores=True)
    assert [label.decode() for label in labels.reshape(-1)] == expected.labels
    assert class_index.dtype == np.int64
    np.testing.assert_array_equal(class_index, expected.class_indices)
    if scores is not None:
        assert scores.dtype == np.float32 and scores.shape == expected.scores.shape
        np.testing.assert_allclose(scores, expected.scores, rtol=1e-5, atol=1e-5)


def test_raw_uint8_equals_predict(kserve, native, images):
    result = kserve.infer(MODEL, [image_input(images, "UINT8")], request_id="req-7",
                          outputs=outputs("label", "class_index", "scores"))
    response = result.get_response()
    assert response.id == "req-7"
    assert response.model_name == MODEL
    assert response.model_version == str(native.model_info().model_version)
    assert result.as_numpy("label").shape == (len(images),)
    assert_same_as_predict(native, images, result.as_numpy("label"),
                           result.as_numpy("class_index"), result.as_numpy("scores"))
    # Real images of a trained model: not all one class.
    assert len(set(result.as_numpy("class_index").tolist())) > 1


def test_raw_fp32_equals_predict(kserve, native, images):
    values = images.astype(np.float32) / 255
    result = kserve.infer(MODEL, [image_input(values, "FP32")],
                          outputs=outputs("scores", "label", "class_index"))
    # The outputs come back in the order asked for.
    assert [o.name for o in result.get_response().outputs] == ["scores", "label", "class_index"]
    assert_same_as_predict(native, images, result.as_numpy("label"),
                           result.as_numpy("class_index"), result.as_numpy("scores"))


def test_default_outputs_are_label_and_class_index(kserve, images):
    result = kserve.infer(MODEL, [image_input(images[:3], "UINT8")])
    assert [o.name for o in result.get_response().outputs] == ["label", "class_index"]


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_typed_contents_equal_predict_and_come_back_typed(stub, native, images, datatype):
    array = images if datatype == "UINT8" else images.astype(np.float32) / 255
    response = stub.ModelInfer(typed_request(array, datatype, ("label", "class_index", "scores")))
    assert len(response.raw_output_contents) == 0
    label, class_index, scores = response.outputs
    assert (label.datatype, list(label.shape)) == ("BYTES", [len(images)])
    assert (class_index.datatype, list(class_index.shape)) == ("INT64", [len(images)])
    assert scores.datatype == "FP32"
    assert_same_as_predict(native, images, np.array(label.contents.bytes_contents),
                           np.array(class_index.contents.int64_contents, dtype=np.int64),
                           np.array(scores.contents.fp32_contents, np.float32).reshape(
                               list(scores.shape)))


def test_infer_runs_through_the_predict_batcher_and_energy_meter(kserve, native, server, images):
    before, scrape_before = native.stats(), server.metrics()
    kserve.infer(MODEL, [image_input(images[:5], "UINT8")])
    after, scrape_after = native.stats(), server.metrics()
    assert after.predict_batch_requests == before.predict_batch_requests + 1
    assert after.predict_batch_samples == before.predict_batch_samples + 5
    assert after.energy.lower_tier_inference_joules > before.energy.lower_tier_inference_joules
    assert after.energy.readout_inference_joules > before.energy.readout_inference_joules
    # Counted in the metrics under its own method, not in strata.v1's Predict counters.
    series = 'strata_rpc_requests_total{code="OK",method="ModelInfer"}'
    assert metric_value(scrape_after, series) == metric_value(scrape_before, series) + 1
    assert after.predict.ok == before.predict.ok


# ---- errors -------------------------------------------------------------------------------------

def test_unknown_model_and_version_are_not_found(kserve, images):
    tensor = image_input(images[:1], "UINT8")
    with expect_error(grpc.StatusCode.NOT_FOUND, '"mnist"'):
        kserve.infer("mnist", [tensor])
    with expect_error(grpc.StatusCode.NOT_FOUND, '"12345"'):
        kserve.infer(MODEL, [tensor], model_version="12345")
    with expect_error(grpc.StatusCode.NOT_FOUND, '"latest"'):
        kserve.infer(MODEL, [tensor], model_version="latest")


@pytest.mark.parametrize("shape,words", [
    ([2, 783], ["shape [2, 783]", "[N, 784]"]),
    ([784], ["shape [784]"]),
    ([1, 28, 28], ["shape [1, 28, 28]"]),
    ([0, 784], ["empty batch"]),
])
def test_bad_shapes_are_invalid_argument(kserve, shape, words):
    tensor = triton.InferInput("image", shape, "UINT8")
    tensor.set_data_from_numpy(np.zeros(shape, np.uint8))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, *words):
        kserve.infer(MODEL, [tensor])


def test_unsupported_datatype_and_unknown_names_are_invalid_argument(kserve, images):
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"INT32"', "UINT8 or FP32"):
        kserve.infer(MODEL, [image_input(images[:1].astype(np.int32), "INT32")])
    wrong_name = triton.InferInput("pixels", [1, 784], "UINT8")
    wrong_name.set_data_from_numpy(images[:1])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"pixels"', '"image"'):
        kserve.infer(MODEL, [wrong_name])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "2 tensors"):
        kserve.infer(MODEL, [image_input(images[:1], "UINT8"), image_input(images[:1], "UINT8")])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"probabilities"'):
        kserve.infer(MODEL, [image_input(images[:1], "UINT8")], outputs=outputs("probabilities"))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"label" requested twice'):
        kserve.infer(MODEL, [image_input(images[:1], "UINT8")], outputs=outputs("label", "label"))
    classification = [triton.InferRequestedOutput("label", class_count=3)]
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "classification"):
        kserve.infer(MODEL, [image_input(images[:1], "UINT8")], outputs=classification)


def test_contents_of_the_wrong_size_or_kind_are_invalid_argument(stub, images):
    raw = service_pb2.ModelInferRequest(model_name=MODEL)
    raw.inputs.add(name="image", datatype="UINT8", shape=[2, 784])
    raw.raw_input_contents.append(images[:2].tobytes()[:-1])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "1567 bytes", "1568"):
        stub.ModelInfer(raw)
    raw.raw_input_contents[0] = images[:2].tobytes()
    raw.raw_input_contents.append(b"extra")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents: 2 entries"):
        stub.ModelInfer(raw)
    del raw.raw_input_contents[1]
    raw.inputs[0].contents.uint_contents.append(1)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "contents must be empty"):
        stub.ModelInfer(raw)

    short = typed_request(images[:2], "UINT8")
    del short.inputs[0].contents.uint_contents[-1]
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "needs 1568 elements", "got 1567"):
        stub.ModelInfer(short)
    wrong_field = typed_request(images[:2].astype(np.float32), "FP32")
    wrong_field.inputs[0].datatype = "UINT8"
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "uint_contents", "got 0"):
        stub.ModelInfer(wrong_field)
    over = typed_request(images[:1], "UINT8")
    over.inputs[0].contents.uint_contents[5] = 256
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "element 5 is 256", "at most 255"):
        stub.ModelInfer(over)
    nan = images[:2].astype(np.float32) / 255
    nan[1, 3] = np.nan
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "element 787 is NaN"):
        stub.ModelInfer(typed_request(nan, "FP32"))
    infinite = service_pb2.ModelInferRequest(model_name=MODEL)
    infinite.inputs.add(name="image", datatype="FP32", shape=[1, 784])
    values = np.zeros(784, np.float32)
    values[0] = np.inf
    infinite.raw_input_contents.append(values.tobytes())
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "element 0 is infinite"):
        stub.ModelInfer(infinite)


def test_limits_are_resource_exhausted(kserve, stub, images):
    too_many = np.zeros((MAX_BATCH + 1, 784), np.uint8)
    with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"batch of {MAX_BATCH + 1}",
                      f"at most {MAX_BATCH}"):
        kserve.infer(MODEL, [image_input(too_many, "UINT8")])
    big = service_pb2.ModelInferRequest(model_name=MODEL)
    big.inputs.add(name="image", datatype="UINT8", shape=[1, 784])
    big.raw_input_contents.append(bytes(MAX_MESSAGE_BYTES + 1))
    with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, str(MAX_MESSAGE_BYTES),
                      "--max_message_bytes"):
        stub.ModelInfer(big)


@pytest.mark.parametrize("method,request_bytes,words", [
    # A length running past the end of the message.
    ("ModelInfer", b"\x0a\x10strata", ["cannot parse the ModelInferRequest"]),
    # model_name that is not UTF-8.
    ("ModelInfer", b"\x0a\x02\xff\xfe", ["model_name", "UTF-8"]),
    # An invalid wire type (7) for field 1.
    ("ModelMetadata", b"\x0f", ["cannot parse the ModelMetadataRequest"]),
    ("RepositoryIndex", b"\x0a\x01\x80", ["repository_name", "UTF-8"]),
    ("ModelReady", b"\x12\x05ab", ["cannot parse the ModelReadyRequest"]),
])
def test_unparseable_requests_are_invalid_argument(server, method, request_bytes, words):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, *words):
            call(request_bytes)


def test_the_server_still_answers_after_every_error(kserve, native, images):
    assert kserve.is_server_ready()
    result = kserve.infer(MODEL, [image_input(images[:2], "UINT8")])
    assert_same_as_predict(native, images[:2], result.as_numpy("label"),
                           result.as_numpy("class_index"))


# ---- token and TLS ------------------------------------------------------------------------------

def test_token_with_auth_all(start_server, tmp_path, images):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = start_server(*SERVER_FLAGS, f"--auth_token_file={token_file}", "--auth_all")
    client = triton.InferenceServerClient(server.address)
    # The probes stay open; everything else needs the token.
    assert client.is_server_live() and client.is_server_ready()
    with expect_error(grpc.StatusCode.UNAUTHENTICATED):
        client.infer(MODEL, [image_input(images[:1], "UINT8")])
    with expect_error(grpc.StatusCode.UNAUTHENTICATED):
        client.get_model_metadata(MODEL)
    with expect_error(grpc.StatusCode.UNAUTHENTICATED):
        client.is_model_ready(MODEL, headers={"authorization": "Bearer wrong"})
    headers = {"authorization": "Bearer s3cret-token"}
    assert client.is_model_ready(MODEL, headers=headers)
    result = client.infer(MODEL, [image_input(images[:1], "UINT8")], headers=headers)
    assert result.as_numpy("label").shape == (1,)
    client.close()


def test_tls(start_server, tls_files, images):
    cert, key = tls_files
    server = start_server(*SERVER_FLAGS, f"--tls_cert={cert}", f"--tls_key={key}",
                          health_flags=("--tls", f"--tls_ca={cert}"))
    client = triton.InferenceServerClient(f"localhost:{server.port}", ssl=True,
                                          root_certificates=cert)
    assert client.is_model_ready(MODEL)
    result = client.infer(MODEL, [image_input(images[:2], "UINT8")])
    assert result.as_numpy("class_index").shape == (2,)
    client.close()


# ---- a text model beside the image model --------------------------------------------------------

TEXT_MODEL = "news"


@pytest.fixture(scope="module")
def text_server(build_dir, bundle, text_bundle):
    yield from serve(build_dir, bundle, f"--model={TEXT_MODEL}={text_bundle}")


@pytest.fixture(scope="module")
def text_kserve(text_server):
    yield from triton_client(text_server)


@pytest.fixture(scope="module")
def text_native(text_server):
    yield from native_client(text_server)


@pytest.fixture(scope="module")
def stub_for_text(text_server):
    yield from kserve_stub(text_server)


def text_input(texts):
    """A BYTES tensor "text" [N] as tritonclient sends it (raw: length-prefixed elements)."""
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_))
    return tensor


def raw_text_request(*texts):
    """A ModelInferRequest for the text model with `texts` (bytes) as raw length-prefixed input."""
    request = service_pb2.ModelInferRequest(model_name=TEXT_MODEL)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(
        b"".join(len(text).to_bytes(4, "little") + text for text in texts))
    return request


def test_text_model_is_listed_and_described(text_kserve, text_native):
    index = text_kserve.get_model_repository_index()
    assert sorted(m.name for m in index.models) == [TEXT_MODEL, MODEL]
    info = text_native.model_info(model=TEXT_MODEL)
    metadata = text_kserve.get_model_metadata(TEXT_MODEL)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("label", "BYTES", [-1]), ("class_index", "INT64", [-1]),
        ("scores", "FP32", [-1, len(info.labels)])]
    assert text_kserve.is_model_ready(TEXT_MODEL, str(info.model_version))


def test_text_infer_equals_predict(text_kserve, text_native, stub_for_text):
    texts = [text for _, text in TRAIN_TEXTS] + ["Café crème, s'il vous plaît — 東京 🍜"]
    expected = text_native.predict(texts, model=TEXT_MODEL, return_scores=True)
    result = text_kserve.infer(TEXT_MODEL, [text_input([t.encode() for t in texts])],
                               outputs=outputs("label", "class_index", "scores"))
    assert [label.decode() for label in result.as_numpy("label")] == expected.labels
    np.testing.assert_array_equal(result.as_numpy("class_index"), expected.class_indices)
    np.testing.assert_allclose(result.as_numpy("scores"), expected.scores, rtol=1e-5, atol=1e-5)
    # The model learnt its training texts.
    assert expected.labels[:len(TRAIN_TEXTS)] == [label for label, _ in TRAIN_TEXTS]

    typed = service_pb2.ModelInferRequest(model_name=TEXT_MODEL)
    tensor = typed.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    response = stub_for_text.ModelInfer(typed)
    assert [b.decode() for b in response.outputs[0].contents.bytes_contents] == expected.labels


@pytest.mark.parametrize("texts,words", [
    ([b""], ['inputs[0] ("text") element 0', "empty text"]),
    ([b"fine", b"caf\xc3"], ['inputs[0] ("text") element 1', "not valid UTF-8 at byte 3"]),
    ([b"x" * 201], ["element 0", "201 bytes", "at most 200"]),
])
def test_bad_texts_are_invalid_argument(stub_for_text, texts, words):
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, *words):
        stub_for_text.ModelInfer(raw_text_request(*texts))


def test_text_tensor_errors_are_invalid_argument(text_kserve, stub_for_text, images):
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"image"', '"text"'):
        text_kserve.infer(TEXT_MODEL, [image_input(images[:1], "UINT8")])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"text"', '"image"'):
        text_kserve.infer(MODEL, [text_input([b"a text"])])
    wrong_type = triton.InferInput("text", [1], "UINT8")
    wrong_type.set_data_from_numpy(np.zeros(1, np.uint8))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, '"UINT8"', "BYTES"):
        text_kserve.infer(TEXT_MODEL, [wrong_type])
    truncated = raw_text_request(b"hello")
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0][:-1]
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "runs past the end"):
        stub_for_text.ModelInfer(truncated)
    trailing = raw_text_request(b"hello")
    trailing.raw_input_contents[0] += b"\x00"
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "1 raw bytes after the last text"):
        stub_for_text.ModelInfer(trailing)
    typed = service_pb2.ModelInferRequest(model_name=TEXT_MODEL)
    typed.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"ok", b"\xff"])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "element 1", "not valid UTF-8 at byte 0"):
        stub_for_text.ModelInfer(typed)
    # Still serving.
    assert text_kserve.infer(TEXT_MODEL, [text_input([b"a match"])]).as_numpy("label").shape == (1,)
