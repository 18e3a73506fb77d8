"""Typed runtime options (issue 8) and CPU features / pinned precision (issue 9): one schema per
runner, one validator, one error per mistake; package options checked, device-only ones never taken
from a package; one cache resolver; CLI/sample --threads through the runner's schema."""
from __future__ import annotations

import enum
import json
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit import cpu
from edgekit.errors import ConfigError
from edgekit.options import MAX_THREADS, Option, OptionSchema, OptionWarning, cache_dir, threads_option
from edgekit.package import write_package
from edgekit.runners import RUNNERS, describe_options
from models.meta import GOLDEN_MODELS
from pkgtools import image_steps, make_package, manifest_for

# device side: runs again under numpy 1.26 in tests/test_numpy1.py (openvino/onnx tests skip there)
pytestmark = pytest.mark.device
GM = {m.name: m for m in GOLDEN_MODELS}
BUILTIN_RUNNERS = ("onnxruntime", "onnxruntime-gpu", "openvino", "qnn", "tensorrt")


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


SCHEMA = OptionSchema("demo runner", [
    threads_option(aliases=("intra_op_num_threads",)),
    Option("device", str, "CPU", "where it runs"),
    Option("color", Color, Color.RED, "an enum"),
    Option("mode", str, "fast", "a choice", choices=("fast", "exact")),
    Option("scale", float, 1.0, "a number", min=0.0, max=10.0),
    Option("streams", (int, str), None, "int or AUTO", min=1, choices=("AUTO",)),
    Option("flag", bool, False, "a switch"),
    Option("providers", list, None, "names"),
    Option("cache_dir", Path, None, "a cache folder", device_only=True),
])


# ----------------------------------------------------------------- the validator
def test_validate_fills_defaults_and_normalizes():
    out = SCHEMA.validate({"color": "BLUE", "mode": "Exact", "scale": 2, "streams": "auto", "intra_op_num_threads": 3,
                           "providers": ("a", "b"), "cache_dir": Path("/x")}, source="test")
    assert out == {"threads": 3, "device": "CPU", "color": Color.BLUE, "mode": "exact", "scale": 2.0,
                   "streams": "AUTO", "flag": False, "providers": ["a", "b"], "cache_dir": "/x"}
    assert SCHEMA.validate({"threads": None}, source="test")["threads"] == 0  # None = not set


def test_unknown_name_is_one_error_with_owner_known_names_and_closest_match():
    with pytest.raises(ConfigError) as err:
        SCHEMA.validate({"devcie": "GPU", "zzz": 1}, source="edgekit.load()")
    msg = str(err.value)
    assert 'unknown demo runner options "devcie" (did you mean "device"?), "zzz"' in msg
    assert "(from edgekit.load())" in msg and "known options: threads, device, color" in msg
    with pytest.raises(ConfigError, match='"runtme" \\(did you mean "runtime"\\?\\)'):
        SCHEMA.validate({"runtme": "x"}, source="edgekit.load()", also_known=("runtime",))
    with pytest.raises(ConfigError, match='"intra_op_threads" \\(did you mean "threads"\\?\\)'):  # alias → its name
        SCHEMA.validate({"intra_op_threads": 1}, source="x")


@pytest.mark.parametrize("values, expect", [
    ({"threads": "abc"}, rf'"threads" must be an integer in \[0, {MAX_THREADS}\], but got \'abc\''),
    ({"threads": 100000}, rf'"threads" must be an integer in \[0, {MAX_THREADS}\], but got 100000'),
    ({"threads": -1}, r'"threads" must be an integer in'),
    ({"threads": True}, r'"threads" must be an integer in'),
    ({"threads": 2.0}, r'"threads" must be an integer in'),
    ({"color": "green"}, r'"color" must be one of \{\'red\', \'blue\'\}, but got \'green\''),
    ({"mode": "slow"}, r'"mode" must be one of \{\'fast\', \'exact\'\}'),
    ({"scale": 11}, r'"scale" must be a number in \[0, 10\]'),
    ({"streams": 0}, r'"streams" must be an integer >= 1 or one of \{\'AUTO\'\}'),
    ({"flag": "yes"}, r'"flag" must be true or false'),
    ({"providers": ["a", 1]}, r'"providers" must be a list of strings'),
    ({"threads": 1, "intra_op_num_threads": 2}, r'are the same demo runner option "threads"; give it once'),
])
def test_bad_values_are_one_config_error(values, expect):
    with pytest.raises(ConfigError, match=expect) as err:
        SCHEMA.validate(values, source="test")
    assert "\n" not in str(err.value)


def test_threads_cap_is_sane():
    assert 16 <= MAX_THREADS <= 256


def test_a_declaration_that_contradicts_itself_fails_at_import():
    with pytest.raises(ConfigError, match='"x" must be an integer >= 1, but got 0'):
        Option("x", int, 0, min=1)
    with pytest.raises(ConfigError, match="declared twice"):
        OptionSchema("r", [Option("a", int), Option("b", int, aliases=("a",))])
    with pytest.raises(ConfigError, match='"type" must be one of'):
        Option("x", dict)
    with pytest.raises(ConfigError, match='"name" must be a lowercase identifier'):
        Option("Bad-Name", int)


def test_describe_is_json():
    doc = json.loads(json.dumps(SCHEMA.describe()))
    by = {d["name"]: d for d in doc}
    assert by["threads"] == {"name": "threads", "type": "int", "default": 0, "help": by["threads"]["help"],
                             "min": 0, "max": MAX_THREADS, "choices": None, "device_only": False,
                             "aliases": ["intra_op_num_threads"]}
    assert by["color"]["choices"] == ["red", "blue"] and by["color"]["default"] == "red"
    assert by["streams"]["type"] == "int | str" and by["cache_dir"]["device_only"] is True


def test_package_values_drop_device_only_and_unknown_names_with_a_warning_but_bad_values_fail():
    with pytest.warns(OptionWarning) as rec:
        out = SCHEMA.parse({"cache_dir": "/etc", "typo_optoin": 3, "threads": 2}, source="pkg", from_package=True)
    assert out == {"threads": 2}
    text = " | ".join(str(w.message) for w in rec)
    assert 'device-only option "cache_dir"' in text and '"typo_optoin"' in text
    with pytest.raises(ConfigError, match='"threads" must be .* \\(demo runner option, from pkg\\)'):
        SCHEMA.parse({"threads": "abc"}, source="pkg", from_package=True)


# ----------------------------------------------------------------- the cache resolver
def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("openvino") == tmp_path / "root" / "openvino"
    monkeypatch.delenv("EDGEKIT_CACHE_DIR")
    assert cache_dir("tensorrt") == tmp_path / "xdg" / "edgekit" / "tensorrt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("openvino") == tmp_path / "home" / ".cache" / "edgekit" / "openvino"
    assert not (tmp_path / "home").exists()  # resolving creates nothing
    with pytest.raises(ConfigError, match='"kind" must be'):
        cache_dir("../etc")
    from edgekit.runners.openvino import OpenVinoConfig
    from edgekit.runners.tensorrt.cache import default_cache_dir

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "one"))
    assert default_cache_dir() == tmp_path / "one" / "tensorrt"
    assert OpenVinoConfig.from_options({}).cache_path == tmp_path / "one" / "openvino"


# ----------------------------------------------------------------- CPU features
AVX2_ONLY = "processor : 0\nflags : fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor : 0\nflags : fpu avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
PI5 = "processor : 0\nFeatures : fp asimd evtstrm aes crc32 asimdhp asimddp\nCPU implementer : 0x41\n"


def test_parse_cpuinfo():
    a = cpu.parse_cpuinfo(AVX2_ONLY, "x86_64")
    assert a.avx2 and not a.vnni and not a.bf16 and not a.amx and a.is_x86
    s = cpu.parse_cpuinfo(SAPPHIRE, "x86_64")
    assert s.vnni and s.amx and s.avx512_bf16 and s.bf16
    p = cpu.parse_cpuinfo(PI5, "aarch64")
    assert p.neon and p.dotprod and p.is_arm and not p.vnni and not p.bf16


def test_this_cpu_is_detected_not_assumed():
    f = cpu.cpu_features()
    assert f is cpu.cpu_features()  # cached
    assert cpu.has_vnni() == f.vnni and cpu.has_bf16() == f.bf16
    if sys.platform.startswith("linux") and Path("/proc/cpuinfo").is_file():
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                flags = set(line.split(":", 1)[1].split())
                break
        # never more than the kernel lists; less under emulation (the process's CPUID wins: tests/test_cpu.py)
        assert not f.vnni or bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
        assert not f.bf16 or bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


# ----------------------------------------------------------------- every runner
def test_every_runner_declares_its_options_and_shared_names_mean_the_same():
    schemas = {name: RUNNERS.get(name).options for name in BUILTIN_RUNNERS}
    for name, schema in schemas.items():
        assert isinstance(schema, OptionSchema) and schema.options, name
        assert all(o.help for o in schema.options), f"{name}: every option has a one-line help"
        assert [d["name"] for d in describe_options(name)] == schema.names
    threads = [s["threads"] for s in schemas.values() if "threads" in s]
    assert len(threads) >= 4 and all(t.type is int and t.min == 0 and t.max == MAX_THREADS for t in threads)
    for name in ("openvino", "onnxruntime-gpu", "tensorrt"):
        assert "device" in schemas[name]
    for schema in schemas.values():  # a folder on the device never comes from a package
        if "cache_dir" in schema:
            assert schema["cache_dir"].device_only


def test_every_registered_runner_imports_and_has_one_registration():
    """Each runner plug-in (built in or from an entry point) imports, is a Runner and declares a schema;
    the built-in map and pyproject's entry points name the same class (one registration, no drift)."""
    from edgekit.runners import Runner

    for name in RUNNERS.names():
        cls = RUNNERS.get(name)
        assert issubclass(cls, Runner) and cls.name == name, name
        assert isinstance(cls.options, OptionSchema), name
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["edgekit.runners"]
    from edgekit.runners import BUILTINS

    assert declared == BUILTINS


def test_describing_options_imports_no_runtime():
    code = ("import sys; from edgekit.runners import describe_all_options; d = describe_all_options(); "
            "print([m for m in ('onnxruntime', 'openvino', 'tensorrt', 'onnxruntime_qnn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_targets_json_lists_runner_options():
    from typer.testing import CliRunner

    from edgekit.cli import app

    res = CliRunner().invoke(app, ["targets", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    ov = {o["name"]: o for o in doc["runner_options"]["openvino"]}
    assert ov["device"]["default"] == "CPU" and ov["inference_precision"]["choices"] == ["f32", "bf16", "f16"]


@pytest.fixture(scope="module")
def ort_pkg(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return make_package(tmp_path_factory.mktemp("ort"), GM["conv_bn_relu"])


@pytest.mark.parametrize("runtime", BUILTIN_RUNNERS)
def test_load_typo_is_caught_on_every_runner(ort_pkg, runtime):
    """Checked before the runtime is imported or the model compiled: the same error on every runner."""
    with pytest.raises(ConfigError) as err:
        edgekit.load(ort_pkg, runtime=runtime, runtme="openvino")
    assert f'unknown {runtime} runner option "runtme" (did you mean "runtime"?)' in str(err.value)


@pytest.mark.parametrize("value", ["abc", 100000])
def test_bad_threads_is_one_error_before_anything_starts(ort_pkg, value):
    with pytest.raises(ConfigError, match='"threads" must be an integer in'):
        edgekit.load(ort_pkg, threads=value)


def _repack(pkg: Path, tmp: Path, edit) -> Path:
    """The package with its manifest edited (checksums and integrity record rewritten)."""
    stage = tmp / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    with zipfile.ZipFile(pkg) as z:
        z.extractall(stage)
    manifest = json.loads((stage / "manifest.json").read_text())
    for name in ("manifest.json", "integrity.json", "signature.json"):
        (stage / name).unlink(missing_ok=True)
    edit(manifest)
    return write_package(stage, manifest, tmp / f"edited-{pkg.name}")


def test_package_options_are_checked(tmp_path):
    pytest.importorskip("onnxruntime")
    gm = GM["conv_bn_relu"]
    stage = tmp_path / "s"
    (stage / "model").mkdir(parents=True)
    shutil.copy(gm.path, stage / "model" / "model.onnx")
    m = manifest_for(gm)
    m["target"]["runtime_options"] = {"threads": "abc"}
    pkg = write_package(stage, m, tmp_path / "bad.edgepkg")
    with pytest.raises(ConfigError, match=r"\"threads\" must be .*from the package's manifest.target.runtime_options"):
        edgekit.load(pkg)
    with edgekit.load(pkg, threads=1) as model:  # the call overrides what the package says
        assert model.runner.options["threads"] == 1


# ----------------------------------------------------------------- openvino: options and pinned precision
@pytest.fixture(scope="module")
def ov_fp32(tmp_path_factory):
    pytest.importorskip("openvino")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return edgekit.build(GM["conv_bn_relu"].path, target="openvino", precision="fp32",
                             output=tmp_path_factory.mktemp("ov") / "conv.edgepkg")


def test_openvino_ignores_a_package_cache_dir_and_runs_fp32_in_f32(ov_fp32, tmp_path, monkeypatch):
    evil = tmp_path / "evil"

    def edit(m):
        m["target"]["runtime_options"] = {"device": "CPU", "cache_dir": str(evil), "num_threads": 1}

    pkg = _repack(ov_fp32, tmp_path, edit)
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "mine"))
    with pytest.warns(OptionWarning, match='device-only option "cache_dir"'):
        model = edgekit.load(pkg)
    with model:
        assert model.runner.options["threads"] == 1  # the older name in a package still works
        compiled = model.runner.describe()["compiled"]
        assert Path(compiled["cache_dir"]).parent == tmp_path / "mine" / "openvino"
        # nothing recorded, precision fp32: pinned to f32 even where the CPU would pick bf16 (AMX)
        assert compiled["inference_precision"] == "f32"
        assert compiled["inference_precision_reason"].startswith("pinned")
    assert not evil.exists()
    with edgekit.load(pkg, cache_dir="", inference_precision="f32") as m2:
        assert m2.runner.describe()["compiled"]["inference_precision_reason"] == "set by the call"


def test_each_precision_gets_its_own_compiled_blob(tmp_path):
    """OpenVINO's CPU cache keys a blob on the model, not the precision hint: an f32 blob imported for a bf16
    load gave non-finite outputs (attention_block, OpenVINO 2026.4, AMX CPU).  One folder per compile config."""
    pytest.importorskip("openvino")
    gm = GM["attention_block"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = edgekit.build(gm.path, target="openvino", precision="fp32", output=tmp_path / "att.edgepkg")
    x = np.random.default_rng(2).standard_normal(tuple(gm.inputs[0].shape)).astype(np.float32)
    cache = tmp_path / "cache"
    outs, folders = {}, set()
    for precision in ("f32", "bf16", "f32", "bf16"):  # the second round reads the blobs back
        with edgekit.load(pkg, cache_dir=str(cache), inference_precision=precision) as m:
            y = m.infer({gm.inputs[0].name: x})["hidden"]
            folders.add(m.runner.describe()["compiled"]["cache_dir"])
        assert np.isfinite(y).all(), precision
        if precision in outs:
            np.testing.assert_array_equal(y, outs[precision])
        outs[precision] = y
    assert len(folders) == 2 and all(Path(f).parent == cache for f in folders)
    np.testing.assert_allclose(outs["bf16"], outs["f32"], rtol=0.1, atol=0.1)  # bf16 where the CPU has it, else f32


def test_pinned_precision_rules(monkeypatch):
    from edgekit.runners.openvino import InferencePrecision, pinned_precision

    no_bf16 = cpu.parse_cpuinfo(AVX2_ONLY, "x86_64")
    with_bf16 = cpu.parse_cpuinfo(SAPPHIRE, "x86_64")
    assert pinned_precision("fp32", "GPU")[0] is InferencePrecision.F32
    assert pinned_precision("int8", "CPU")[0] is InferencePrecision.F32
    assert pinned_precision("fp16", "GPU")[0] is None
    monkeypatch.setattr(cpu, "cpu_features", lambda: with_bf16)
    assert pinned_precision("bf16", "CPU")[0] is InferencePrecision.BF16
    monkeypatch.setattr(cpu, "cpu_features", lambda: no_bf16)
    with pytest.raises(ConfigError, match="verified in bf16, which needs a CPU with AVX512-BF16 or AMX"):
        pinned_precision("bf16", "CPU")
    assert pinned_precision("bf16", "GPU")[0] is InferencePrecision.BF16  # not this host's CPU


def test_openvino_fp32_output_matches_onnxruntime_fp32(ov_fp32):
    """The f32 pin is visible in the numbers: on an AMX CPU the default bf16 would be ~1e-2 off."""
    ort = pytest.importorskip("onnxruntime")
    gm = GM["conv_bn_relu"]
    x = np.random.default_rng(3).standard_normal(tuple(gm.inputs[0].shape)).astype(np.float32)
    want = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with edgekit.load(ov_fp32, cache_dir="") as m:
        got = m.infer({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_inspect_lists_the_options_a_package_runs_with(ov_fp32):
    from typer.testing import CliRunner

    from edgekit.cli import app

    res = CliRunner().invoke(app, ["inspect", str(ov_fp32), "--json"])
    assert res.exit_code == 0, res.output
    opts = json.loads(res.stdout)["runner_options"]
    assert set(opts) == set(RUNNERS.get("openvino").options.names)
    assert opts["threads"] == {"value": 0, "from": "default"}
    res = CliRunner().invoke(app, ["inspect", str(ov_fp32)])
    assert "options    device='CPU'" in res.output


# ----------------------------------------------------------------- CLI and sample --threads
def test_cli_threads_reaches_the_openvino_runner_and_bad_threads_is_one_line(ov_fp32, tmp_path):
    from typer.testing import CliRunner

    from edgekit.cli import app

    x = tmp_path / "x.npy"
    np.save(x, np.zeros(tuple(GM["conv_bn_relu"].inputs[0].shape), np.float32))
    res = CliRunner().invoke(app, ["run", str(ov_fp32), str(x), "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["bench", str(ov_fp32), "--threads", "1", "--iterations", "2", "--warmup", "0",
                                   "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["bench", str(ov_fp32), "--threads", "100000", "--iterations", "2"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: ") and '"threads"' in res.output


def test_classify_folder_threads_goes_through_the_schema(tmp_path):
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples" / "classify_folder"))
    try:
        from classify_folder import classify_folder
    finally:
        sys.path.pop(0)
    from PIL import Image

    pkg = make_package(tmp_path, GM["conv_bn_relu"], preprocess=image_steps(32, 32),
                       postprocess={"task": "classify", "top_k": 1})
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(folder / "a.png")
    assert classify_folder(pkg, folder, threads=1)["images"] == 1
    with pytest.raises(ConfigError, match='"threads" must be an integer'):
        classify_folder(pkg, folder, threads=100000)


# ----------------------------------------------------------------- device profiles
def test_every_device_profile_carries_valid_options():
    from edgekit.targets.devices import check_profile, load_profiles

    profiles = load_profiles()
    assert profiles
    for profile in profiles.values():
        check_profile(profile)


@pytest.mark.parametrize("table, expect", [
    ("[pi.runtime_options]\nthreds = 4\n", r'"threds" \(did you mean "threads"\?\) \(from devices.toml: \[pi.runtime_options\]\)'),
    ("[pi.runtime_options]\nthreads = \"four\"\n", r'"threads" must be an integer .*\[pi.runtime_options\]'),
    ("[pi.runtime_options]\nthreads = 4\n[pi.target_options]\nno_such_build_option = 1\n",
     r"\[pi.target_options\]"),
])
def test_a_bad_profile_option_names_its_table(tmp_path, table, expect):
    from edgekit.targets.devices import check_profile, load_profiles

    path = tmp_path / "devices.toml"
    path.write_text('[pi]\ntarget = "onnxruntime"\nprecision = "int8"\n' + table)
    with pytest.raises(ConfigError, match=expect):
        check_profile(load_profiles(path)["pi"], path)


def test_a_profile_never_sets_a_device_cache_folder(tmp_path):
    from edgekit.targets.devices import check_profile, load_profiles

    path = tmp_path / "devices.toml"
    path.write_text('[nuc]\ntarget = "openvino"\nprecision = "fp32"\n[nuc.runtime_options]\ncache_dir = "/tmp/x"\n')
    with pytest.raises(ConfigError, match="'cache_dir' is a device-only openvino runner option"):
        check_profile(load_profiles(path)["nuc"], path)
