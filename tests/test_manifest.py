"""The typed manifest model: parse ↔ write round trip, field-path errors in every section, the generated schema."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgekit.errors import ManifestError, RegistryError
from edgekit.manifest import (
    Manifest,
    QnnDetails,
    TargetDetails,
    TensorrtDetails,
    Verification,
    details_type,
    json_schema,
    parse_manifest,
    register_details,
    schema_text,
)
from models.meta import GOLDEN_MODELS
from pkgtools import image_steps, manifest_for

pytestmark = pytest.mark.device

GM = {m.name: m for m in GOLDEN_MODELS}
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "edgekit" / "schema" / "manifest.schema.json"
SHA = "ab" * 32


def full_manifest() -> dict:
    """A manifest with every optional section filled, as the pipeline writes one."""
    doc = manifest_for(GM["conv_bn_relu"], preprocess=image_steps(32, 32), postprocess={"task": "classify"})
    doc["files"] = {"model/model.onnx": SHA, "model/model_ctx.bin": SHA}
    doc["artifact"] = {"entry": "model/model.onnx", "files": ["model/model.onnx", "model/model_ctx.bin"]}
    doc["target"] = {
        "name": "qnn", "device": "snapdragon-8-gen-3", "runtime": "qnn",
        "runtime_versions": {"onnxruntime": "1.22"}, "runtime_options": {"htp_arch": 75},
        "details": {"precision": "int8", "context_binary": "model/model_ctx.bin",
                    "context_binaries": ["model/model_ctx.bin"], "htp_arch": 75, "soc_model": 57, "soc": "SM8650",
                    "placement": {"total_nodes": 3, "htp_nodes": 2, "cpu_nodes": [{"node": "n1", "op_type": "TopK"}],
                                  "all_on_npu": False, "partitions": 1},
                    "qairt_sdk": "2.31"},
    }
    doc["precision"] = "int8"
    doc["quantization"] = {"format": "QDQ", "tool": "onnxruntime", "recipe": {"method": "minmax"},
                           "calibration": {"count": 16}, "activations": "uint8"}
    doc["support"] = {"target": "qnn", "ok": True, "unsupported": [], "dynamic_dims": [], "notes": ["x"]}
    doc["verification"] = {
        "samples": 40, "data": "40 samples held out", "task": "classify", "random_inputs": False,
        "runtime": "qnn", "runtime_options": {},
        "outputs": [{"name": "y", "max_abs": 0.1, "mean_abs": 0.01, "cosine": 0.99, "sqnr_db": 31.5, "nonfinite": 0,
                     "top1_agreement": 1.0, "top5_agreement": 1.0}],
        "parts": [{"name": "y", "output": "y", "kind": "logits", "sqnr_db": 31.5, "cosine": 0.99, "max_abs": 0.1}],
        "weakest": "y", "min_sqnr_db": 31.5, "min_cosine": 0.99, "top1_agreement": 1.0, "top5_agreement": 1.0,
        "labelled_samples": 0, "latency_ms": {"artifact_median": 1.0, "fp32_reference_median": 0.5, "note": "x"},
        "gates": {"min_sqnr_db": 25.0}, "gate_sources": {"min_sqnr_db": "default floor for int8"}, "passed": True,
    }
    doc["build"] = {"stages": [{"name": "load", "seconds": 0.01}], "warnings": ["only 8 verification samples"],
                    "host": {"python": "3.11"}}
    return doc


def test_round_trip_keeps_every_section():
    doc = full_manifest()
    m = parse_manifest(doc, labels=["a", "b"])
    assert isinstance(m.details, QnnDetails)
    assert m.details.context_binary == "model/model_ctx.bin" and m.details.placement.htp_nodes == 2
    assert m.details.placement.cpu_nodes[0].op_type == "TopK"
    assert m.details.get("qairt_sdk") == "2.31"  # undeclared details stay readable like a mapping
    assert m.target == "qnn" and m.runtime == "qnn" and m.runtime_options == {"htp_arch": 75}
    assert m.labels == ("a", "b") and m.labels_file is None
    assert isinstance(m.verification, Verification) and m.verification["samples"] == 40
    assert m.quantization.format == "QDQ" and m.quantization["activations"] == "uint8"
    assert m.build.warnings == ("only 8 verification samples",)
    out = m.to_json()
    assert out == json.loads(json.dumps(out))  # plain JSON types only
    assert parse_manifest(out) == m
    for key in ("source", "target", "verification", "quantization", "build", "support"):
        for k, v in doc[key].items():
            assert out[key][k] == v, (key, k)


def test_details_are_typed_per_target():
    doc = full_manifest()
    doc["target"] = {"name": "tensorrt", "runtime": "tensorrt",
                     "details": {"build_profile": {"precisions": ["fp16"]}, "trt_version": "10.3"}}
    m = parse_manifest(doc)
    assert isinstance(m.details, TensorrtDetails) and m.details.build_profile == {"precisions": ["fp16"]}
    doc["target"] = {"name": "onnxruntime", "runtime": "onnxruntime", "details": {"reduce_range": False}}
    m = parse_manifest(doc)
    assert type(m.details) is TargetDetails and m.details["reduce_range"] is False
    assert details_type("tensorrt") is TensorrtDetails and details_type("nope") is TargetDetails


def test_register_details_refuses_a_second_class():
    class Other(TargetDetails):
        pass

    with pytest.raises(RegistryError, match="already registered"):
        register_details("qnn", Other)
    register_details("qnn", QnnDetails)  # the same class again is fine


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["verification"].__setitem__("samples", "ten"), r"manifest.verification.samples: expected an integer, got 'ten'"),
        (lambda d: d["verification"]["outputs"][0].__setitem__("sqnr_db", None), r"manifest.verification.outputs\[0\].sqnr_db: expected a number, got null"),
        (lambda d: d["verification"]["parts"][0].__setitem__("kind", "vibes"), r"manifest.verification.parts\[0\].kind: must be one of"),
        (lambda d: d["verification"].__setitem__("passed", "yes"), r"manifest.verification.passed: expected true or false"),
        (lambda d: d["verification"]["latency_ms"].__setitem__("artifact_median", "1"), r"manifest.verification.latency_ms.artifact_median: expected a number"),
        (lambda d: d["verification"].pop("passed"), r"manifest.verification.passed: required field is missing"),
        (lambda d: d["target"]["details"]["placement"].__setitem__("total_nodes", "3"), r"manifest.target.details.placement.total_nodes: expected an integer"),
        (lambda d: d["target"]["details"].__setitem__("context_binary", 7), r"manifest.target.details.context_binary: expected a string, got 7"),
        (lambda d: d["target"]["runtime_versions"].__setitem__("onnxruntime", 1.22), r"manifest.target.runtime_versions\['onnxruntime'\]: expected a string"),
        (lambda d: d["target"].__setitem__("runtime_options", []), r"manifest.target.runtime_options: expected an object, got a list of 0"),
        (lambda d: d["quantization"].__setitem__("recipe", "minmax"), r"manifest.quantization.recipe: expected an object"),
        (lambda d: d["support"].__setitem__("notes", "x"), r"manifest.support.notes: expected a list"),
        (lambda d: d["build"]["stages"][0].__setitem__("seconds", -1), r"manifest.build.stages\[0\].seconds: expected a number ≥ 0"),
        (lambda d: d["build"].__setitem__("warnings", [3]), r"manifest.build.warnings\[0\]: expected a string, got 3"),
        (lambda d: d["files"].__setitem__("model/model.onnx", "zz"), r"manifest.files\['model/model.onnx'\]: expected 64 lowercase hex digits"),
        (lambda d: d["preprocess"][2].__setitem__("mean", [0.5]), r"manifest.preprocess\[2\].mean: expected 3 numbers, got 1"),
        (lambda d: d["source"].__setitem__("opset", 17.5), r"manifest.source.opset: expected an integer, got 17.5"),
        (lambda d: d.__setitem__("precision", "int4"), r"manifest.precision: must be one of \{'fp32', 'fp16', 'bf16', 'int8'\}"),
        (lambda d: d.__setitem__("inputs", []), r"manifest.inputs: expected at least one input"),
        (lambda d: d.__setitem__("labels", 3), r"manifest.labels: expected a string, got 3"),
        (lambda d: d.__setitem__("verification", [1]), r"manifest.verification: expected an object, got a list of 1"),
    ],
)
def test_errors_name_the_field_in_every_section(edit, message):
    doc = full_manifest()
    edit(doc)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(doc)


def test_optional_sections_may_be_null_or_absent():
    doc = full_manifest()
    for key in ("quantization", "support", "verification", "build", "labels", "recipe"):
        doc[key] = None
    m = parse_manifest(doc)
    assert m.verification is None and m.build is None
    for key in ("quantization", "support", "verification", "build", "labels", "recipe"):
        del doc[key]
    assert parse_manifest(doc).quantization is None


def test_bf16_is_a_precision():
    doc = full_manifest()
    doc["precision"] = "bf16"
    assert parse_manifest(doc).precision == "bf16"


def test_committed_schema_is_the_generated_one():
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == json_schema(), "regenerate it: python -m edgekit.manifest"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text()


def test_schema_accepts_what_the_model_writes_and_rejects_what_it_refuses():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = parse_manifest(full_manifest()).to_json()
    jsonschema.validate(doc, schema)
    for edit in (lambda d: d.__setitem__("precision", "int4"),
                 lambda d: d["verification"].__setitem__("samples", "ten"),
                 lambda d: d["target"]["details"]["placement"].__setitem__("total_nodes", "3"),
                 lambda d: d["build"]["stages"][0].__setitem__("seconds", -1),
                 lambda d: d["preprocess"][0].__setitem__("mode", "cmyk")):
        bad = copy.deepcopy(doc)
        edit(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
