"""Real strata-server processes for the pytest suites of tests/python (conftest.py).

A small model is trained once per session with strata-train on Fashion-MNIST (Debian's
dataset-fashion-mnist), and a small text model on TRAIN_TEXTS over all-MiniLM-L6-v2 (the ctest
fixture text_model fetches it into .tools/models); each StrataServer runs the real binary on a free port (--port_file) and
waits until its health service says SERVING (the `strata health --wait` command).
"""

import gzip
import os
import pathlib
import subprocess
import tempfile
import time

import numpy as np

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def fashion_test_images(count):
    """The first `count` Fashion-MNIST test images, uint8 [count, 784]."""
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz", "rb") as f:
        data = f.read(16 + 784 * count)
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(count, 784).copy()


def fashion_train_samples(count, offset=0):
    """Fashion-MNIST training images [count, 784] (uint8) and their class numbers [count]."""
    with gzip.open(FASHION_DIR / "train-images-idx3-ubyte.gz", "rb") as f:
        images = f.read(16 + 784 * (offset + count))[16 + 784 * offset:]
    with gzip.open(FASHION_DIR / "train-labels-idx1-ubyte.gz", "rb") as f:
        labels = f.read(8 + offset + count)[8 + offset:]
    return (np.frombuffer(images, np.uint8).reshape(count, 784).copy(),
            np.frombuffer(labels, np.uint8).copy())


def train_bundle(build_dir, source_dir, out_path, samples=1000):
    subprocess.run([f"{build_dir}/bin/strata-train", "--train=fashion-mnist:train",
                    f"--train_limit={samples}", "--test=", f"--spec={source_dir}/specs/small.spec",
                    f"--out={out_path}"], check=True, capture_output=True)
    return out_path


# Three labels, three sentences each: enough for a text model whose predictions can be checked.
TRAIN_TEXTS = [
    ("sport", "The striker scored twice in the second half of the match."),
    ("sport", "The tennis final went to five sets before the champion won."),
    ("sport", "She ran the marathon in under three hours."),
    ("food", "Slice the onions and fry them slowly in butter."),
    ("food", "Add a pinch of salt and let the soup simmer for an hour."),
    ("food", "We ordered pizza with mushrooms and extra cheese."),
    ("computers", "The compiler reported a syntax error on line twelve."),
    ("computers", "The database server ran out of memory under load."),
    ("computers", "He wrote a Python script to parse the log files."),
]


def train_text_bundle(build_dir, source_dir, out_path, max_bytes=200):
    """A text model (MiniLM, texts of up to `max_bytes` bytes and 64 tokens, 256 random ReLU
    features) fitted on TRAIN_TEXTS by strata-train; its spec and data files go beside it."""
    directory = os.path.dirname(out_path)
    spec, train = os.path.join(directory, "text.spec"), os.path.join(directory, "train.tsv")
    model_dir = os.path.join(source_dir, ".tools/models/all-minilm-l6-v2")
    with open(spec, "w") as f:
        f.write(f"text encoder={model_dir} max_tokens=64 max_bytes={max_bytes}\n"
                "expand units=256\n")
    with open(train, "w") as f:
        f.writelines(f"{label}\t{text}\n" for label, text in TRAIN_TEXTS)
    subprocess.run([f"{build_dir}/bin/strata-train", f"--spec={spec}", f"--train={train}",
                    "--test=", "--lambda=0.1", f"--out={out_path}"], check=True,
                   capture_output=True)
    return out_path


def make_tls_certificate(directory):
    """A self-signed certificate for localhost / 127.0.0.1: (cert path, key path)."""
    cert, key = os.path.join(directory, "server.crt"), os.path.join(directory, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class StrataServer:
    """One strata-server process on a free loopback port; stop() ends it."""

    def __init__(self, build_dir, bundle, *flags, env=None):
        self.build_dir = build_dir
        self.dir = tempfile.mkdtemp(prefix="strata_pytest_")
        port_file = os.path.join(self.dir, "port")
        metrics_port_file = os.path.join(self.dir, "metrics_port")
        self.log_path = os.path.join(self.dir, "server.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [f"{build_dir}/bin/strata-server", f"--bundle={bundle}", "--address=127.0.0.1:0",
             f"--port_file={port_file}", "--metrics_address=127.0.0.1:0",
             f"--metrics_port_file={metrics_port_file}", *flags],
            stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        self.port = int(self._wait_for(port_file))
        self.metrics_port = int(self._wait_for(metrics_port_file))
        self.address = f"127.0.0.1:{self.port}"

    def _wait_for(self, path):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.exists(path) and open(path).read().strip():
                return open(path).read().strip()
            if self.process.poll() is not None:
                raise RuntimeError(f"strata-server exited: {self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"strata-server did not write {path}: {self.log()}")

    def wait_serving(self, *client_flags):
        """Waits for SERVING through the health service (`strata health --wait`)."""
        subprocess.run([f"{self.build_dir}/bin/strata", "health", f"--server={self.address}",
                        "--wait=120s", *client_flags], check=True, capture_output=True)
        return self

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            return reply.read().decode()

    def log(self):
        self._log.flush()
        return open(self.log_path, errors="replace").read()[-4000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._log.close()
        return self.process.returncode


def metric_value(scrape, series):
    """The value of one series line (exact name and labels) in a Prometheus scrape, or 0."""
    for line in scrape.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0
