"""Python client of a Strata server (the strata.v1 gRPC API).

    import numpy as np
    import strata

    with strata.Client("127.0.0.1:50051") as client:
        print(client.model_info().labels)
        result = client.predict(np.zeros((2, 784), np.uint8), return_scores=True)
        print(result.labels, result.scores.shape)

The generated protobuf messages and stubs are strata.v1.strata_pb2 and strata.v1.strata_pb2_grpc.
"""

from strata.client import Client, Features, Predictions, StrataError

__all__ = ["Client", "Features", "Predictions", "StrataError"]
