#!/usr/bin/env bash
# grpcurl against a real strata-server, as a stranger with no .proto file would use it: everything
# through server reflection. Lists the services (strata.v1, KServe v2, health, reflection),
# describes Predict, calls strata.v1 Predict and KServe ModelInfer on the same real Fashion-MNIST
# image (typed contents in JSON) and checks they give the same label, and checks that a bad
# ModelInfer comes back as InvalidArgument naming the tensor.
#
# Usage: grpcurl_test.sh BINARY_DIR SOURCE_DIR   (ctest passes both)
set -euo pipefail
bin="$1/bin"
src="$2"

source "$src/scripts/lib/serve.sh"

grpcurl="$("$src/scripts/install-grpcurl.sh" | tail -n 1)"
work="$(mktemp -d /tmp/strata_grpcurl.XXXXXX)"
trap 'serve_stop_all; rm -rf "$work"' EXIT

serve_train_bundle "$bin" "$work/model.bundle" "$src/specs/small.spec" 1000
serve_start server "$work" "$bin/strata-server" --bundle="$work/model.bundle" --address=127.0.0.1:0
address="127.0.0.1:$server_port"
"$bin/strata" health --server="$address" --wait=120s

echo "== grpcurl list"
"$grpcurl" -plaintext "$address" list | tee "$work/services"
for service in strata.v1.Strata inference.GRPCInferenceService grpc.health.v1.Health; do
  grep -qx "$service" "$work/services" || { echo "reflection does not list $service" >&2; exit 1; }
done
# Into files first: `grpcurl ... | grep -q` fails under pipefail whenever grep exits at its match
# before grpcurl has written everything (SIGPIPE), which made this test flaky.
"$grpcurl" -plaintext "$address" list inference.GRPCInferenceService > "$work/methods"
grep -qx inference.GRPCInferenceService.ModelInfer "$work/methods"
"$grpcurl" -plaintext "$address" describe strata.v1.Strata.Predict > "$work/describe"
grep -q "PredictRequest" "$work/describe"

# The first Fashion-MNIST test image, as strata.v1 JSON (pixels: base64) and KServe JSON (typed).
python3 - "$work" <<'PY'
import base64, gzip, json, sys
work = sys.argv[1]
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    image = f.read(16 + 784)[16:]
json.dump({"samples": [{"pixels": base64.b64encode(image).decode()}]}, open(f"{work}/predict.json", "w"))
json.dump({"model_name": "strata", "id": "grpcurl-1",
           "inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 784],
                       "contents": {"uint_contents": list(image)}}]},
          open(f"{work}/infer.json", "w"))
json.dump({"model_name": "strata",
           "inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 783],
                       "contents": {"uint_contents": list(image[:783])}}]},
          open(f"{work}/bad_infer.json", "w"))
PY

echo "== strata.v1.Strata/Predict"
"$grpcurl" -plaintext -d @ "$address" strata.v1.Strata/Predict < "$work/predict.json" \
  | tee "$work/predict.out"
echo "== inference.GRPCInferenceService/ModelInfer"
"$grpcurl" -plaintext -d @ "$address" inference.GRPCInferenceService/ModelInfer \
  < "$work/infer.json" | tee "$work/infer.out"
python3 - "$work" <<'PY'
import base64, json, sys
work = sys.argv[1]
predict = json.load(open(f"{work}/predict.out"))
infer = json.load(open(f"{work}/infer.out"))
label = predict["predictions"][0]["label"]
outputs = {o["name"]: o for o in infer["outputs"]}
kserve_label = base64.b64decode(outputs["label"]["contents"]["bytes_contents"][0]).decode()
kserve_index = int(outputs["class_index"]["contents"]["int64_contents"][0])
# grpcurl prints proto field names; proto3 leaves out fields at their default (class index 0).
index = predict["predictions"][0].get("class_index", 0)
print(f"Predict: {label} ({index}); ModelInfer: {kserve_label} ({kserve_index}), "
      f"version {infer['model_version']}")
assert infer["id"] == "grpcurl-1", infer
assert kserve_label == label, (kserve_label, label)
assert kserve_index == index, (kserve_index, index)
assert infer["model_version"] == str(predict["model_version"]), (infer, predict)
PY

echo "== a bad ModelInfer"
if "$grpcurl" -plaintext -d @ "$address" inference.GRPCInferenceService/ModelInfer \
    < "$work/bad_infer.json" > "$work/bad.out" 2>&1; then
  echo "a ModelInfer of shape [1, 783] succeeded" >&2; exit 1
fi
cat "$work/bad.out"
grep -q "InvalidArgument" "$work/bad.out"
grep -q 'shape \[1, 783\], expected \[N, 784\]' "$work/bad.out"
echo "grpcurl: OK"
