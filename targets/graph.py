"""Graph walking helpers every target's ``check`` and ``build`` share."""
from __future__ import annotations

from typing import Any, Iterator, List, Tuple

from edgekit.manifest import TensorSpec


def iter_nodes(graph: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Every node, including those inside If/Loop/Scan bodies (named 'outer/inner')."""
    for node in graph.node:
        name = prefix + (node.name or (node.output[0] if node.output else node.op_type))
        yield name, node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_nodes(attr.g, name + "/")
            for sub in attr.graphs:
                yield from iter_nodes(sub, name + "/")


def dynamic_dims(model: Any) -> List[str]:
    """Graph-input dims that are not fixed positive numbers, as 'name[i] ('param')'."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            out.append(f"{vi.name}: unknown rank")
            continue
        for i, d in enumerate(tt.shape.dim):
            if not (d.HasField("dim_value") and d.dim_value > 0):
                out.append(f"{vi.name}[{i}]" + (f" ({d.dim_param!r})" if d.dim_param else ""))
    return out


def graph_specs(model: Any) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """Input and output specs straight from the graph (unknown dims as -1)."""
    import numpy as np
    from onnx import helper

    from .canonicalize import guess_layout

    inits = {t.name for t in model.graph.initializer}

    def spec(v: Any, is_input: bool) -> TensorSpec:
        tt = v.type.tensor_type
        shape = tuple(int(d.dim_value) if d.dim_value > 0 else -1 for d in tt.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        return TensorSpec(v.name, shape, dtype, guess_layout(shape) if is_input else None)

    return ([spec(v, True) for v in model.graph.input if v.name not in inits],
            [spec(v, False) for v in model.graph.output])
