"""Recurrent state carried across calls: which graph inputs take back which graph outputs, and a stream run.

A streaming model (a voice-activity detector, a keyword spotter) is called chunk after chunk with the
state its last call returned.  Checked on independent samples that each start from the state the data
gives (zeros, usually), a package whose state drifts or saturates passes: the error it makes to the
state shows only once the state is fed back, and it compounds.  So the verify stage also runs the
held-out samples as one stream, through the fp32 reference and through the artifact, each feeding back
its own state, and checks every output over the stream (``<output> (streamed)`` parts, judged by the
same gates).

The pairs are read from the graph: a graph input that reaches the initial-state input of an LSTM, GRU or
RNN (through ops that only reshape), and the graph output that the same cell's final state reaches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

#: (initial-state input index, final-state output index) of each recurrent op
_STATE_SLOTS: Dict[str, Tuple[Tuple[int, int], ...]] = {
    "LSTM": ((5, 1), (6, 2)),
    "GRU": ((5, 1),),
    "RNN": ((5, 1),),
}
#: ops that move a state tensor without changing its values
_PASS_THROUGH = frozenset({"Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"})


@dataclass(frozen=True)
class StatePair:
    """A graph input that takes back a graph output on the next call."""

    input: str
    output: str
    #: the recurrent node that carries it
    node: str

    def to_json(self) -> Dict[str, str]:
        return {"input": self.input, "output": self.output, "node": self.node}


def state_pairs(model: Any) -> Tuple[StatePair, ...]:
    """The state pairs of an ONNX model (see the module doc); () for a model without recurrent state."""
    g = model.graph
    inputs = {i.name for i in g.input} - {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    consumers: Dict[str, List[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def source(name: str) -> Optional[str]:
        while name not in inputs:
            n = producer.get(name)
            if n is None or n.op_type not in _PASS_THROUGH:
                return None
            name = n.input[0]
        return name

    def sink(name: str) -> Optional[str]:
        while name not in outputs:
            users = consumers.get(name, [])
            if len(users) != 1 or users[0].op_type not in _PASS_THROUGH:
                return None
            name = users[0].output[0]
        return name

    def size(vi: Any) -> Optional[int]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        return None if any(d is None for d in dims) else int(np.prod(dims, dtype=np.int64))

    sizes = {v.name: size(v) for v in list(g.input) + list(g.output)}
    pairs: List[StatePair] = []
    for n in g.node:
        for i_slot, o_slot in _STATE_SLOTS.get(n.op_type, ()):
            if len(n.input) <= i_slot or len(n.output) <= o_slot or not n.input[i_slot] or not n.output[o_slot]:
                continue
            src, dst = source(n.input[i_slot]), sink(n.output[o_slot])
            if src is None or dst is None or any(p.input == src for p in pairs):
                continue
            if None not in (sizes[src], sizes[dst]) and sizes[src] != sizes[dst]:  # not the same state (batch > 1)
                continue
            pairs.append(StatePair(input=src, output=dst, node=n.name or n.op_type))
    return tuple(pairs)


def _stream(infer: Callable[[Dict[str, np.ndarray]], Mapping[str, np.ndarray]],
            feeds: Sequence[Mapping[str, np.ndarray]], pairs: Sequence[StatePair],
            carry: Callable[[Mapping[str, np.ndarray]], bool]
            ) -> Iterator[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
    """(call, outputs) of each feed in order, the call taking the state outputs of the call before where
    ``carry(feed)`` says so (the first call always takes its feed's own state)."""
    state: Dict[str, np.ndarray] = {}
    for feed in feeds:
        call = dict(feed)
        if state and carry(feed):
            for p in pairs:
                want = np.asarray(feed[p.input])
                call[p.input] = np.asarray(state[p.input], dtype=want.dtype).reshape(want.shape)
        res = {k: np.asarray(v) for k, v in infer(call).items()}
        state = {p.input: res[p.output] for p in pairs}
        yield call, res


def run_stream(infer: Callable[[Dict[str, np.ndarray]], Mapping[str, np.ndarray]],
               feeds: Sequence[Mapping[str, np.ndarray]], pairs: Sequence[StatePair]) -> List[Dict[str, np.ndarray]]:
    """``feeds`` in order as one stream: the first call takes its state inputs from its feed, every later
    call the state outputs of the call before (the other inputs always come from the feed)."""
    return [res for _, res in _stream(infer, feeds, pairs, lambda feed: True)]


def carry_state(feeds: Sequence[Mapping[str, np.ndarray]], pairs: Sequence[StatePair],
                infer: Callable[[Dict[str, np.ndarray]], Mapping[str, np.ndarray]]
                ) -> Tuple[List[Dict[str, np.ndarray]], int]:
    """Calibration feeds with the state a stream would bring them: the feeds run in order through ``infer``
    (the fp32 model) as one stream, and a feed whose state inputs are all zeros (how data for a stateful
    model usually comes) takes the state the stream carried to it instead — the first feed keeps its own,
    as a stream starts.  Calibrated on zero states alone, the ranges of everything the state feeds are
    those of a stream's first call; a deployed model spends its life on the later ones.  Returns the feeds
    and how many took a carried state."""
    zero = lambda feed: not any(np.any(feed[p.input]) for p in pairs)  # noqa: E731
    calls = [call for call, _ in _stream(infer, feeds, pairs, zero)]
    return calls, sum(1 for feed in feeds[1:] if zero(feed))
