"""What this backend needs of the installation (`tyllm doctor`): onnxruntime runs y = x + 1."""

import numpy as np
import onnxruntime
from onnx import TensorProto, helper
from tyllm.backends.probe import probe_findings


def run_probe(x: np.ndarray) -> np.ndarray:
    x_info, y_info = (helper.make_tensor_value_info(n, TensorProto.FLOAT, x.shape) for n in "xy")
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "probe",
                              [x_info], [y_info], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime of the pinned range reads
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def check() -> list[tuple[bool, str]]:
    return probe_findings(
        run_probe, works="onnxruntime loads and runs an ONNX model",
        wrong="onnxruntime ran a model that computes wrong results",
        cannot="onnxruntime cannot run an ONNX model: {}. Reinstall it: bash scripts/install.sh")
