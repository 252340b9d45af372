"""A typed client of the strata.v1 API over the generated gRPC stubs.

Images go in as numpy arrays: the first axis is the batch, each row is one image, flattened
row-major (so shape (N, 784) and (N, 28, 28) both mean N images of 784 values). uint8 arrays are
sent as raw pixels (a byte b is read as b / 255); floating arrays as float values on the same scale
(0 black, 1 white; finite). The server checks the size (ModelInfo.input_size).

Texts go in as a str or a sequence of str, for text models (ModelInfo.input_kind "text"); the
server checks each (1..ModelInfo.max_text_bytes bytes of UTF-8).

A server may serve several named models (strata-server --model); every method takes `model=`, the
name (None: the server's default model).

Every failed call raises StrataError, carrying the gRPC status code and the server's message.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Iterator, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from strata.v1 import strata_pb2, strata_pb2_grpc

ArrayLike = Union[np.ndarray, Sequence]
# What predict() and extract_features() take: images (ArrayLike) or texts (a str or a sequence of
# str).
Samples = Union[ArrayLike, str, Sequence[str]]


class StrataError(Exception):
    """A call that failed: `code` is the grpc.StatusCode, `message` the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass
class Predictions:
    """Predict's answer: one entry per sample, in request order."""

    labels: list[str]
    class_indices: np.ndarray  # int64 [N], positions in ModelInfo.labels
    scores: Optional[np.ndarray]  # float32 [N, classes], only with return_scores=True
    model_version: int
    lower_tier_joules: float
    upper_tier_joules: float


@dataclasses.dataclass
class Features:
    """ExtractFeatures' answer: float32 [N, feature_size], one row per sample."""

    features: np.ndarray
    model_version: int
    joules: float


def _rows(images: ArrayLike) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 0:
        raise ValueError("images: expected an array of images, got a scalar")
    if array.ndim == 1:
        array = array[np.newaxis]
    return array.reshape(array.shape[0], -1)


def _sample(row: np.ndarray) -> strata_pb2.Sample:
    if row.dtype == np.uint8:
        return strata_pb2.Sample(pixels=row.tobytes())
    if np.issubdtype(row.dtype, np.floating):
        return strata_pb2.Sample(values=strata_pb2.FloatVector(values=row.astype(np.float32)))
    raise TypeError(f"images: expected uint8 pixels or floating values, got {row.dtype}")


def _is_texts(samples) -> bool:
    if isinstance(samples, str):
        return True
    return (isinstance(samples, (list, tuple)) and len(samples) > 0
            and all(isinstance(sample, str) for sample in samples))


def _samples(samples: Samples) -> list[strata_pb2.Sample]:
    if isinstance(samples, (list, tuple)) and len(samples) == 0:
        return []  # the server refuses an empty request, saying so
    if isinstance(samples, str):
        return [strata_pb2.Sample(text=samples)]
    if _is_texts(samples):
        return [strata_pb2.Sample(text=text) for text in samples]
    return [_sample(row) for row in _rows(samples)]


def _labelled_sample(sample, label: str) -> strata_pb2.LabeledSample:
    if isinstance(sample, str):
        return strata_pb2.LabeledSample(sample=strata_pb2.Sample(text=sample), label=label)
    return strata_pb2.LabeledSample(sample=_sample(np.asarray(sample).reshape(-1)), label=label)


class Client:
    """A connection to one strata-server. Thread-safe, as its gRPC channel is.

    address: "host:port".
    root_certificates: PEM bytes (or a path to them) of the CA that signed the server's
        certificate; with it the channel uses TLS, without it plaintext.
    certificate_chain, private_key: PEM bytes (or paths) of a client certificate, for servers
        started with --tls_client_ca (mutual TLS).
    token: the bearer token (strata-server --auth_token_file), sent on every call.
    timeout: seconds each call may take (None: no deadline).
    max_message_bytes: the largest message the channel sends or receives (default 64 MiB, the
        server's default limit).
    """

    def __init__(self, address: str, *, root_certificates: Union[bytes, str, None] = None,
                 certificate_chain: Union[bytes, str, None] = None,
                 private_key: Union[bytes, str, None] = None, token: Optional[str] = None,
                 timeout: Optional[float] = None, max_message_bytes: int = 64 << 20):
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_certificates),
                private_key=_pem(private_key), certificate_chain=_pem(certificate_chain))
            self._channel = grpc.secure_channel(address, credentials, options)
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._stub = strata_pb2_grpc.StrataStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise StrataError(error.code(), error.details() or "") from None

    def predict(self, samples: Samples, *, return_scores: bool = False,
                model: Optional[str] = None) -> Predictions:
        """Predicts each sample's label (images or texts; all by one model version)."""
        request = strata_pb2.PredictRequest(samples=_samples(samples), return_scores=return_scores,
                                            model=model or "")
        response = self._call(self._stub.Predict, request)
        predictions = response.predictions
        scores = None
        if return_scores:
            scores = np.array([p.scores for p in predictions], dtype=np.float32)
        return Predictions(
            labels=[p.label for p in predictions],
            class_indices=np.array([p.class_index for p in predictions], dtype=np.int64),
            scores=scores, model_version=response.model_version,
            lower_tier_joules=response.energy.lower_tier_joules,
            upper_tier_joules=response.energy.upper_tier_joules)

    def extract_features(self, samples: Samples, *, model: Optional[str] = None) -> Features:
        """The frozen lower tier's feature vector of each sample (images or texts)."""
        request = strata_pb2.ExtractFeaturesRequest(samples=_samples(samples), model=model or "")
        response = self._call(self._stub.ExtractFeatures, request)
        features = np.array([f.values for f in response.features], dtype=np.float32)
        return Features(features=features, model_version=response.model_version,
                        joules=response.energy.lower_tier_joules)

    def update(self, samples: Iterable[Tuple[Union[ArrayLike, str], str]], *,
               batch_size: int = 256, model: Optional[str] = None) -> strata_pb2.UpdateSummary:
        """Streams labelled samples into the upper tier, `batch_size` samples per message.

        `samples` yields (sample, label) pairs, a sample being one image row as for predict() or
        one text (str); it is read lazily, so a long iterator streams without being held in memory. Bad samples are rejected
        by the server and listed in the returned summary (the stream goes on); see strata.proto's
        Update for when the readout is refreshed and what is durable.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        # gRPC turns an exception in the request iterator into a cancelled call; raise the
        # caller's own error (a bad image type, say) instead.
        raised = []

        def messages():
            try:
                yield from _update_messages(samples, batch_size, model or "")
            except Exception as error:
                raised.append(error)
                raise

        try:
            return self._call(self._stub.Update, messages())
        except StrataError:
            if raised:
                raise raised[0] from None
            raise

    def model_info(self, *, model: Optional[str] = None) -> strata_pb2.ModelInfo:
        """A served model: input kind and shape, feature size, labels, version, device, ..."""
        return self._call(self._stub.GetModelInfo,
                          strata_pb2.GetModelInfoRequest(model=model or ""))

    def stats(self, *, model: Optional[str] = None) -> strata_pb2.Stats:
        """The server's counters since it started (RPCs, samples, energy, update decisions); the
        model-specific ones of `model`."""
        return self._call(self._stub.GetStats, strata_pb2.GetStatsRequest(model=model or ""))

    def snapshot(self, *, model: Optional[str] = None) -> strata_pb2.SnapshotInfo:
        """Writes a snapshot of a model's upper-tier statistics (servers with --state_dir)."""
        return self._call(self._stub.Snapshot, strata_pb2.SnapshotRequest(model=model or ""))


def _update_messages(samples: Iterable[Tuple[Union[ArrayLike, str], str]], batch_size: int,
                     model: str) -> Iterator[strata_pb2.UpdateRequest]:
    iterator = iter(samples)
    while True:
        chunk = list(itertools.islice(iterator, batch_size))
        if not chunk:
            return
        yield strata_pb2.UpdateRequest(
            samples=[_labelled_sample(sample, label) for sample, label in chunk], model=model)


def _pem(value: Union[bytes, str, None]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()
