"""Fuzz cases: how case number N of a run is generated (deterministically from the run seed and N), which
library entry point it calls, and how the outcome is judged against the error contract.

The contract (also in test_fuzz.py's docstring): a bad input either loads, or
raises `swinv2.io.errors.InputError` (or a `FileNotFoundError` naming the path) with a one-line message
of at most MAX_MESSAGE characters that names the file; the CLI exits 0, 1 or 2 and on 1 prints exactly
one `swinv2 <command>: error: ...` line. Everything else is a finding.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import mutators as mut
from .seeds import IMAGE_FORMATS

#: Longest message accepted as "one line a user can read".
MAX_MESSAGE = 1000
#: A real variant (28 M parameters) for the cases that read a tiny file as a published variant.
VARIANT = "swinv2-tiny-patch4-window8-256"
#: Kinds in the order cases cycle through them (weights: how many slots each gets).
SCHEDULE = (
    ["config_json"] * 3
    + ["preprocessor_json"] * 2
    + ["safetensors"] * 3
    + ["checkpoint_pth"] * 3
    + ["shard_index"] * 2
    + ["pickle_payload"] * 1
    + ["image"] * 3
    + ["cli"] * 3
)
#: Every CONSOLE_EVERY-th case (offset CONSOLE_EVERY // 2) runs the real `swinv2` script in a subprocess.
CONSOLE_EVERY = 60
KINDS = sorted({*SCHEDULE, "cli_console"})

CONFIG_FIELDS = (
    "image_size",
    "patch_size",
    "num_channels",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "pretrained_window_sizes",
    "mlp_ratio",
    "qkv_bias",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "drop_path_rate",
    "hidden_act",
    "use_absolute_embeddings",
    "initializer_range",
    "layer_norm_eps",
    "encoder_stride",
    "out_features",
    "out_indices",
    "id2label",
    "label2id",
    "num_labels",
    "architectures",
    "model_type",
    "dtype",
    "torch_dtype",
    "problem_type",
    "return_dict",
)
#: Swin2SRConfig's own fields, beside the shared ones above.
SR_CONFIG_FIELDS = ("num_channels_out", "upscale", "img_range", "resi_connection", "upsampler")
PREPROCESSOR_FIELDS = (
    "size",
    "resample",
    "do_resize",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


@dataclass
class Case:
    """One generated case: what it is, where its files are, and the call that exercises it."""

    index: int
    kind: str
    entry: str
    mutation: str
    directory: Path
    call: Callable[[], Any]
    names: list[str] = field(default_factory=list)  # strings any one of which an error message must contain
    marker: Path | None = None  # a file a pickle payload would create
    cli: str | None = None  # "inprocess" or "console"
    argv: list[str] = field(default_factory=list)
    json_output: bool = False
    target: Path | None = None  # the file or directory the entry point is given
    must_reject: bool = False  # invalid by construction: returning normally is a finding too


@dataclass
class Outcome:
    """What a case did: `status` is "ok" (returned), "rejected" (a contract-conforming error) or "finding"."""

    status: str
    exc_type: str = ""
    message: str = ""
    problem: str = ""  # for findings: which rule was broken

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "exc_type": self.exc_type, "message": self.message, "problem": self.problem}


# --------------------------------------------------------------------------------------------- judging


def first_line(text: str, limit: int = 300) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def judge_exception(case: Case, err: BaseException) -> Outcome:
    """Whether an exception out of an API call keeps the contract."""
    from swinv2.io.errors import InputError

    kind = type(err).__name__
    try:
        message = str(err)
    except Exception as inner:  # a message that cannot even be printed (a 5000-digit int, say)
        return Outcome("finding", kind, f"<str() failed: {type(inner).__name__}: {inner}>", "unprintable message")
    ok_type = isinstance(err, InputError) or (isinstance(err, FileNotFoundError) and not isinstance(err, InputError))
    if not ok_type:
        return Outcome("finding", kind, first_line(message), f"uncaught {kind}")
    if "\n" in message.strip():
        return Outcome("finding", kind, first_line(message), "message spans several lines")
    if len(message) > MAX_MESSAGE:
        return Outcome("finding", kind, first_line(message), f"message of {len(message)} characters")
    if case.names and not any(name in message for name in case.names):
        return Outcome("finding", kind, first_line(message), "message does not name the file")
    return Outcome("rejected", kind, first_line(message))


def _strict_json(line: str) -> None:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    json.loads(line, parse_constant=refuse)


def judge_cli(case: Case, code: Any, stdout: str, stderr: str) -> Outcome:
    """Whether a CLI run keeps the contract: exit 0/1/2, one `swinv2 CMD: error:` line on 1, strict --json."""
    command = case.argv[0] if case.argv else "?"
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("[")]
    head = first_line(stderr)
    if "Traceback" in stderr:
        tail = [ln for ln in stderr.splitlines() if ln.strip()][-1:]
        return Outcome("finding", "traceback", first_line(tail[0] if tail else head), "traceback on stderr")
    if code not in (0, 1, 2):
        return Outcome("finding", f"exit {code}", head, f"exit status {code}")
    if case.json_output and code in (0, 1):
        for line in stdout.splitlines():
            try:
                _strict_json(line)
            except ValueError as err:
                return Outcome("finding", "json", first_line(str(err)), "--json line is not strict JSON")
    if code == 1:
        prefix = f"swinv2 {command}: error:"
        if len(lines) != 1:
            return Outcome("finding", f"exit 1, {len(lines)} lines", head, f"stderr has {len(lines)} lines, not 1")
        if not lines[0].startswith(prefix):
            return Outcome("finding", "exit 1", head, "stderr line lacks the 'swinv2 CMD: error:' prefix")
        if len(lines[0]) > MAX_MESSAGE + len(prefix):
            return Outcome("finding", "exit 1", head, f"error line of {len(lines[0])} characters")
        if case.names and not any(name in lines[0] for name in case.names):
            return Outcome("finding", "exit 1", head, "error line does not name the file")
        return Outcome("rejected", "exit 1", head)
    if code == 2:
        return Outcome("rejected", "exit 2", first_line(lines[-1] if lines else ""))
    return Outcome("ok", "exit 0")


def run_case(case: Case) -> Outcome:
    """Call the case's entry point and judge what happened (pickle payloads checked afterwards)."""
    if case.cli == "inprocess":
        from swinv2.cli import main

        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code: Any = main(case.argv)
                except SystemExit as exit_:
                    code = exit_.code
        except BaseException as escaped:  # an exception main() let through: the console shows a traceback
            if isinstance(escaped, KeyboardInterrupt):
                raise
            outcome = Outcome("finding", type(escaped).__name__, first_line(str(escaped)), "exception escaped cli.main")
        else:
            outcome = judge_cli(case, code, out.getvalue(), err.getvalue())
    elif case.cli == "console":
        outcome = case.call()
    else:
        try:
            case.call()
            outcome = Outcome("ok")
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            outcome = judge_exception(case, err)
    if case.marker is not None and case.marker.exists():
        return Outcome("finding", "payload", f"pickle payload created {case.marker}", "pickle payload ran")
    if case.must_reject and outcome.status == "ok":
        return Outcome("finding", "accepted", "returned normally", "invalid input accepted")
    return outcome


# --------------------------------------------------------------------------------- tensor-level mutations


def _floating(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def mutate_state(rng: random.Random, state: dict[str, Any], exotic: bool) -> tuple[dict[str, Any], str]:
    """One edit of a state dict: keys (drop, rename, `module.` prefix, extras), shapes, dtypes, values;
    with `exotic` (pickled files) also meta, sparse, quantized, complex tensors and non-tensor values."""
    state = dict(state)
    keys = list(state)
    key = rng.choice(keys)
    ops = [
        "drop",
        "drop-ape",
        "prefix-all",
        "prefix-one",
        "rename",
        "shape",
        "shape",
        "dtype",
        "nonfinite",
        "extra",
        "empty",
    ]
    if exotic:
        ops += ["meta", "sparse", "sparse-csr", "quantized", "complex", "non-tensor", "nested", "strided"]
    op = rng.choice(ops)
    if op == "drop":
        for k in rng.sample(keys, rng.randint(1, min(3, len(keys)))):
            del state[k]
        return state, "dropped 1-3 keys"
    if op == "drop-ape":
        gone = [k for k in keys if "position_embeddings" in k or "absolute_pos_embed" in k]
        for k in gone or [key]:
            del state[k]
        if not gone:
            return state, f"no absolute position embedding keys to drop; dropped {key}"
        return state, f"dropped absolute position embedding keys {gone}"
    if op == "prefix-all":
        return {f"module.{k}": v for k, v in state.items()}, "every key prefixed with 'module.'"
    if op == "prefix-one":
        state[f"module.{key}"] = state.pop(key)
        return state, f"'module.' prefix on {key}"
    if op == "rename":
        new = rng.choice([key.upper(), key + ".x", key.replace(".", "_"), key.replace("layers.0", "layers.7"), " "])
        state[new] = state.pop(key)
        return state, f"{key} renamed {new!r}"
    if op == "empty":
        return {}, "no tensors at all"
    if op == "extra":
        state[rng.choice(["foo", "layers.99.blocks.0.attn.cpb_mlp.0.weight", "classifier.bias2", ""])] = torch.ones(2)
        return state, "extra unknown key"
    tensor = state[key]
    if op == "shape":
        shaped = rng.choice(["flat", "unsqueeze", "transpose", "zero", "scalar", "grow"])
        new = {
            "flat": lambda: tensor.flatten(),
            "unsqueeze": lambda: tensor.unsqueeze(0),
            "transpose": lambda: tensor.t().contiguous() if tensor.ndim == 2 else tensor.flip(0),
            "zero": lambda: torch.zeros(0),
            "scalar": lambda: torch.tensor(1.0),
            "grow": lambda: torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:]) if tensor.ndim else torch.zeros(2),
        }[shaped]()
        state[key] = new
        return state, f"{key} shape {list(tensor.shape)} -> {list(new.shape)} ({shaped})"
    if op == "dtype":
        dtype = rng.choice(
            [
                torch.float16,
                torch.bfloat16,
                torch.float64,
                torch.int64,
                torch.int8,
                torch.bool,
                torch.uint8,
                torch.int32,
            ]
        )
        state[key] = tensor.to(dtype)
        return state, f"{key} cast to {dtype}"
    if op == "nonfinite":
        value = rng.choice([float("nan"), float("inf"), float("-inf")])
        targets = _floating(state) if rng.random() < 0.5 else [k for k in _floating(state) if "classifier" in k]
        for k in targets or [key]:
            state[k] = torch.full_like(state[k], value) if state[k].is_floating_point() else state[k]
        return state, f"{len(targets)} float tensors filled with {value}"
    if op == "meta":
        state[key] = tensor.to("meta")
        return state, f"{key} is a meta tensor"
    if op == "sparse":
        state[key] = tensor.to_sparse()
        return state, f"{key} is a sparse COO tensor"
    if op == "sparse-csr":
        state[key] = tensor.reshape(tensor.shape[0], -1).to_sparse_csr() if tensor.ndim else tensor.to_sparse()
        return state, f"{key} is a sparse CSR tensor"
    if op == "quantized":
        state[key] = torch.quantize_per_tensor(tensor.float(), 0.1, 0, torch.qint8)
        return state, f"{key} is a quantized qint8 tensor"
    if op == "complex":
        state[key] = tensor.to(torch.complex64)
        return state, f"{key} is complex64"
    if op == "non-tensor":
        state[key] = rng.choice([1, "x", None, [1, 2], {"a": torch.ones(1)}, 1.5])
        return state, f"{key} is a {type(state[key]).__name__}, not a tensor"
    if op == "nested":
        return {"model": rng.choice([state, 3, [1], {"x": state}]), "state_dict": rng.choice([None, "x"])}, (
            "weights under a 'model' wrapper of another shape"
        )
    # strided: a view whose storage is larger than its shape (a slice of a bigger tensor)
    big = torch.zeros(tensor.numel() * 4 + 7)
    state[key] = big[7 : 7 + tensor.numel()].view(tensor.shape) if tensor.numel() else big[:0]
    return state, f"{key} is a view into a larger storage"


def _save_state(state: dict[str, Any], path: Path, wrap: str | None) -> None:
    torch.save({wrap: state} if wrap else state, path)


def _save_safetensors(state: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------- pickle payloads


def payload_pickle(rng: random.Random, marker: Path) -> tuple[bytes, str]:
    """A pickle whose unpickling would create `marker` (through os.system, exec, subprocess or eval)."""
    path = str(marker)
    style = rng.choice(
        [
            "os.system",
            "posix.system",
            "builtins.exec",
            "builtins.eval",
            "subprocess.call",
            "nested-in-dict",
            "proto4-stack-global",
        ]
    )
    if style in ("os.system", "posix.system"):
        module = style.split(".")[0]
        body = f"c{module}\nsystem\n(S'touch {path}'\ntR."
    elif style == "builtins.exec":
        body = f"cbuiltins\nexec\n(S'open({path!r}, \"w\").close()'\ntR."
    elif style == "builtins.eval":
        body = f"cbuiltins\neval\n(S'open({path!r}, \"w\").close()'\ntR."
    elif style == "subprocess.call":
        body = f"csubprocess\ncall\n((S'touch'\nS'{path}'\nltR."
    elif style == "nested-in-dict":
        body = f"(dp0\nS'patch_embed.proj.weight'\np1\ncos\nsystem\n(S'touch {path}'\ntRp2\ns."
    else:

        class Evil:
            def __reduce__(self) -> Any:
                return (os.system, (f"touch {path}",))

        return b"".join([pickle.dumps({"weight": Evil()}, protocol=4)]), "protocol-4 pickle reducing to os.system"
    return body.encode(), f"pickle reducing to {style}"


def torch_zip_with_payload(template: Path, payload: bytes) -> bytes:
    """A torch.save zip (copied from `template`) whose data.pkl is replaced by `payload`."""
    out = io.BytesIO()
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            data = payload if item.filename.endswith("/data.pkl") else source.read(item.filename)
            target.writestr(item.filename, data)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ case builders


class Builder:
    """Builds case N of a run into `work/cNNNNNN/` from the seeds."""

    def __init__(self, seeds: Path, work: Path, run_seed: int) -> None:
        self.seeds, self.work, self.run_seed = Path(seeds), Path(work), run_seed

    def kind_of(self, index: int) -> str:
        if index % CONSOLE_EVERY == CONSOLE_EVERY // 2:
            return "cli_console"
        return SCHEDULE[index % len(SCHEDULE)]

    def build(self, index: int) -> Case:
        rng = random.Random(f"{self.run_seed}:{index}")
        directory = self.work / f"c{index:06d}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        kind = self.kind_of(index)
        self.invalid = False  # set by mutations that make the input invalid by construction
        case = getattr(self, f"_{kind}")(rng, directory)
        case.index, case.kind = index, kind
        case.must_reject = case.must_reject or self.invalid
        return case

    # -- helpers
    def _copy(self, name: str, directory: Path) -> Path:
        source = self.seeds / name
        target = directory / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target

    def _special_file(self, rng: random.Random, path: Path) -> str:
        """Replace `path` by something that is not a regular file."""
        path.unlink(missing_ok=True)
        choice = rng.choice(["missing", "directory", "dev-zero", "dangling-link", "self-link"])
        optional = path.name == "preprocessor_config.json"  # may be absent: defaults apply
        self.invalid = not optional
        if choice == "directory":
            path.mkdir()
        elif choice == "dev-zero":
            path.symlink_to("/dev/zero")
        elif choice == "dangling-link":
            path.symlink_to(path.parent / "nowhere")
        elif choice == "self-link":
            path.symlink_to(path)
        return f"{path.name} is {choice}"

    @staticmethod
    def _case(entry: str, mutation: str, directory: Path, call: Callable[[], Any], *names: Any) -> Case:
        return Case(-1, "", entry, mutation, directory, call, names=[str(directory.name), *map(str, names)])

    # -- kinds
    def _config_json(self, rng: random.Random, directory: Path) -> Case:
        from swinv2 import (
            Swin2SRConfig,
            Swin2SRForImageSuperResolution,
            Swinv2Config,
            Swinv2ForImageClassification,
            load_checkpoint,
        )

        seed = rng.choice(["model", "model", "model_ape", "model_sr"])
        model = self._copy(seed, directory)
        target = model / "config.json"
        fields = CONFIG_FIELDS + SR_CONFIG_FIELDS if seed == "model_sr" else CONFIG_FIELDS
        if rng.random() < 0.06:
            mutation = self._special_file(rng, target)
        else:
            blob, mutation = mut.mutate_json(rng, json.loads(target.read_text()), fields)
            target.write_bytes(blob)
        if seed == "model_sr":
            load_sr = Swin2SRForImageSuperResolution.from_pretrained
            entries: dict[str, Callable[[], Any]] = {
                "Swin2SRConfig.from_pretrained": lambda: Swin2SRConfig.from_pretrained(model),
                "Swin2SRConfig.from_json_file": lambda: Swin2SRConfig.from_json_file(target),
                "Swin2SRForImageSuperResolution.from_pretrained": lambda: load_sr(model),
            }
        else:
            entries = {
                "Swinv2Config.from_pretrained": lambda: Swinv2Config.from_pretrained(model),
                "Swinv2Config.from_json_file": lambda: Swinv2Config.from_json_file(target),
                "Swinv2ForImageClassification.from_pretrained": lambda: Swinv2ForImageClassification.from_pretrained(
                    model
                ),
                "load_checkpoint(dir)": lambda: load_checkpoint(model),
            }
        entry = rng.choice(list(entries))
        return self._case(entry, f"config.json: {mutation}", directory, entries[entry], "config.json")

    def _preprocessor_json(self, rng: random.Random, directory: Path) -> Case:
        from swinv2 import Swinv2ImageProcessor
        from swinv2.pipeline import load_model

        model = self._copy("model", directory)
        image = self._copy("image.png", directory)
        target = model / "preprocessor_config.json"
        if rng.random() < 0.06:
            mutation = self._special_file(rng, target)
        else:
            blob, mutation = mut.mutate_json(rng, json.loads(target.read_text()), PREPROCESSOR_FIELDS)
            target.write_bytes(blob)

        def via_pipeline() -> Any:
            loaded, processor = load_model(model)
            with torch.no_grad():
                return loaded(processor(str(image)).pixel_values)

        entries = {
            "Swinv2ImageProcessor.from_pretrained+call": lambda: Swinv2ImageProcessor.from_pretrained(model)(
                str(image)
            ),
            "pipeline.load_model+forward": via_pipeline,
        }
        entry = rng.choice(list(entries))
        return self._case(
            entry, f"preprocessor_config.json: {mutation}", directory, entries[entry], "preprocessor_config.json"
        )

    def _safetensors(self, rng: random.Random, directory: Path) -> Case:
        from safetensors.torch import load_file

        from swinv2 import Swinv2ForImageClassification, load_checkpoint
        from swinv2.io.checkpoints import read_state_dict

        timm = rng.random() < 0.3
        if timm:
            target = self._copy("timm.safetensors", directory)
            config = self._copy("config.json", directory)
            model = None
        else:
            model = self._copy("model", directory)
            target = model / "model.safetensors"
        roll = rng.random()
        if roll < 0.45:
            blob, mutation = mut.mutate_safetensors(rng, target.read_bytes())
            target.write_bytes(blob)
        elif roll < 0.9:
            state, mutation = mutate_state(rng, load_file(target), exotic=False)
            _save_safetensors(state, target)
        elif roll < 0.95:
            mutation = self._special_file(rng, target)
        else:
            blob, mutation = mut.mutate_bytes(rng, target.read_bytes())
            target.write_bytes(blob)
        if timm:
            entries = {
                "load_checkpoint(file, config=)": lambda: load_checkpoint(target, config=config),
                "read_state_dict": lambda: read_state_dict(target),
            }
        else:
            entries = {
                "load_checkpoint(dir)": lambda: load_checkpoint(model),
                "Swinv2ForImageClassification.from_pretrained": lambda: Swinv2ForImageClassification.from_pretrained(
                    model
                ),
                "read_state_dict": lambda: read_state_dict(target),
            }
        entry = rng.choice(list(entries))
        return self._case(entry, f"{target.name}: {mutation}", directory, entries[entry], target.name)

    def _checkpoint_pth(self, rng: random.Random, directory: Path) -> Case:
        from swinv2 import Swinv2ForImageClassification, load_checkpoint
        from swinv2.io.checkpoints import read_state_dict

        seeds = ["timm.pth", "timm.bin", "microsoft.pth", "simmim.pth", "transformers.bin", "model_bin"]
        seed = rng.choice([*seeds, "swin2sr_original.pth", "swin2sr_original.pth"])  # the release: 1 in 4
        config = self._copy("config.json", directory)
        if seed == "simmim.pth" and rng.random() < 0.9:  # SimMIM needs encoder_stride = the encoder's stride
            config.write_text(json.dumps({**json.loads(config.read_text()), "encoder_stride": 8}))
        if seed == "model_bin":
            model = self._copy(seed, directory)
            target = model / "pytorch_model.bin"
        else:
            model, target = None, self._copy(seed, directory)
        roll = rng.random()
        if roll < 0.75:
            data = torch.load(target, weights_only=True)
            wrappers = ("model", "state_dict", "params_ema", "params")
            wrap = next((w for w in wrappers if isinstance(data, dict) and w in data), None)
            state, mutation = mutate_state(rng, data[wrap] if wrap else data, exotic=True)
            _save_state(state, target, wrap)
        elif roll < 0.8:
            mutation = self._special_file(rng, target)
        else:
            blob, mutation = mut.mutate_bytes(rng, target.read_bytes())
            target.write_bytes(blob)
        entries: dict[str, Callable[[], Any]] = {"read_state_dict": lambda: read_state_dict(target)}
        if model is not None:
            entries["Swinv2ForImageClassification.from_pretrained"] = lambda: (
                Swinv2ForImageClassification.from_pretrained(model)
            )
            entries["load_checkpoint(dir)"] = lambda: load_checkpoint(model)
        elif seed == "swin2sr_original.pth":  # no config: it is read from the tensors
            entries["load_checkpoint(file)"] = lambda: load_checkpoint(target)
            entries["load_checkpoint(file) "] = entries["load_checkpoint(file)"]  # twice the odds
        else:
            entries["load_checkpoint(file, config=)"] = lambda: load_checkpoint(target, config=config)
            entries["load_checkpoint(file, config=) "] = entries["load_checkpoint(file, config=)"]  # twice the odds
            if rng.random() < 0.15:
                entries["load_checkpoint(file, variant=)"] = lambda: load_checkpoint(target, variant=VARIANT)
        entry = rng.choice(list(entries))
        case = self._case(entry.strip(), f"{seed}: {mutation}", directory, entries[entry], target.name)
        case.target = model or target
        return case

    def _shard_index(self, rng: random.Random, directory: Path) -> Case:
        from safetensors.torch import load_file

        from swinv2 import Swinv2ForImageClassification, load_checkpoint
        from swinv2.io.checkpoints import read_state_dict

        model = self._copy("sharded", directory)
        index = model / "model.safetensors.index.json"
        data = json.loads(index.read_text())
        shards = sorted(set(data["weight_map"].values()))
        some_key = rng.choice(list(data["weight_map"]))
        op = rng.choice(
            [
                "self",
                "self-dir",
                "escape",
                "absolute",
                "dev-zero",
                "not-utf8",
                "duplicate",
                "missing",
                "shard-dir",
                "json",
                "json",
                "shard-bytes",
                "shard-state",
                "pickle-shard",
                "huge",
            ]
        )
        self.invalid = op in (
            "self",
            "self-dir",
            "escape",
            "absolute",
            "dev-zero",
            "missing",
            "pickle-shard",
            "not-utf8",
            "shard-dir",
        )
        if op in ("self", "self-dir", "escape", "absolute", "dev-zero", "missing", "pickle-shard"):
            value = {
                "self": "model.safetensors.index.json",
                "self-dir": rng.choice([".", "./", "../" + model.name]),
                "escape": rng.choice(["../../x.safetensors", "../config.json", "../../../etc/passwd"]),
                "absolute": rng.choice(["/etc/passwd", "/etc/hostname", str(self.seeds / "timm.safetensors")]),
                "dev-zero": "/dev/zero",
                "missing": "model-00009-of-00009.safetensors",
                "pickle-shard": "evil.bin",
            }[op]
            if op == "pickle-shard":
                (model / "evil.bin").write_bytes(payload_pickle(rng, directory / "PWNED")[0])
            data["weight_map"][some_key] = value
            index.write_text(json.dumps(data))
            mutation = f"weight_map[{some_key!r}] = {value!r}"
        elif op == "not-utf8":
            index.write_bytes(b"\xff\xfe" + index.read_bytes().replace(b'"weight_map"', b'"weight_\xe9map"'))
            mutation = "index is not UTF-8"
        elif op == "duplicate":
            first, second = load_file(model / shards[0]), load_file(model / shards[-1])
            name = rng.choice(list(first))
            differs = rng.random() < 0.5
            second[name] = first[name] * 2 if differs else first[name]
            self.invalid = differs
            _save_safetensors(second, model / shards[-1])
            mutation = (
                f"tensor {name} in both {shards[0]} and {shards[-1]} ({'different' if differs else 'same'} values)"
            )
        elif op == "shard-dir":
            (model / shards[0]).unlink()
            (model / shards[0]).mkdir()
            mutation = f"{shards[0]} is a directory"
        elif op == "json":
            blob, mutation = mut.mutate_json(rng, data, ("weight_map", "metadata"))
            index.write_bytes(blob)
            mutation = f"index: {mutation}"
        elif op == "shard-bytes":
            shard = model / rng.choice(shards)
            blob, mutation = mut.mutate_safetensors(rng, shard.read_bytes())
            shard.write_bytes(blob)
            mutation = f"{shard.name}: {mutation}"
        elif op == "shard-state":
            shard = model / rng.choice(shards)
            state, mutation = mutate_state(rng, load_file(shard), exotic=False)
            _save_safetensors(state, shard)
            mutation = f"{shard.name}: {mutation}"
        else:  # huge: a weight_map with a million entries pointing at few files
            data["weight_map"] = {f"k{i}": shards[i % len(shards)] for i in range(1_000_000)}
            index.write_text(json.dumps(data))
            mutation = "weight_map with 1,000,000 entries"
        entries = {
            "read_state_dict(dir)": lambda: read_state_dict(model),
            "read_state_dict(index)": lambda: read_state_dict(index),
            "Swinv2ForImageClassification.from_pretrained": lambda: Swinv2ForImageClassification.from_pretrained(model),
            "load_checkpoint(dir)": lambda: load_checkpoint(model),
        }
        entry = rng.choice(list(entries))
        case = self._case(entry, f"shard index: {mutation}", directory, entries[entry], "index.json", *shards)
        case.marker = directory / "PWNED"
        return case

    def _pickle_payload(self, rng: random.Random, directory: Path) -> Case:
        from swinv2 import Swinv2ForImageClassification, load_checkpoint
        from swinv2.io.checkpoints import read_state_dict

        marker = directory / "PWNED"
        payload, style = payload_pickle(rng, marker)
        config = self._copy("config.json", directory)
        place = rng.choice(["raw.bin", "raw.pth", "raw.pt", "zip.pth", "zip.bin", "model_bin"])
        if place == "model_bin":
            model = self._copy("model_bin", directory)
            target = model / "pytorch_model.bin"
            target.write_bytes(torch_zip_with_payload(self.seeds / "model_bin" / "pytorch_model.bin", payload))
            entries = {
                "Swinv2ForImageClassification.from_pretrained": lambda: Swinv2ForImageClassification.from_pretrained(
                    model
                ),
                "load_checkpoint(dir)": lambda: load_checkpoint(model),
                "read_state_dict(dir)": lambda: read_state_dict(model),
            }
        else:
            how, suffix = place.split(".")
            target = directory / f"evil.{suffix}"
            blob = payload if how == "raw" else torch_zip_with_payload(self.seeds / "timm.pth", payload)
            target.write_bytes(blob)
            entries = {
                "read_state_dict": lambda: read_state_dict(target),
                "load_checkpoint(file, config=)": lambda: load_checkpoint(target, config=config),
            }
        entry = rng.choice(list(entries))
        case = self._case(entry, f"{style} as {place}", directory, entries[entry], target.name)
        case.marker = marker
        case.must_reject = True
        case.target = target.parent if place == "model_bin" else target
        return case

    def _image(self, rng: random.Random, directory: Path) -> Case:
        from PIL import Image

        from swinv2 import Swinv2ImageProcessor
        from swinv2.preprocess import open_image

        fmt = rng.choice(list(IMAGE_FORMATS))
        target = directory / f"input{IMAGE_FORMATS[fmt]}"
        roll = rng.random()
        if roll < 0.15:  # crafted, valid, huge (passes PIL's pixel guard or sits right below it)
            width, height = rng.choice([(1, 16_777_216), (16_777_216, 1), (12_000, 12_000), (4096, 4096)])
            color = rng.choice([0, 2, 6]) if width * height <= 4096 * 4096 else 0
            target = directory / "input.png"
            target.write_bytes(mut.png_bytes(width, height, color))
            mutation = f"valid {width}x{height} PNG (color type {color})"
        elif roll < 0.3:  # valid, unusual pixel modes
            mode = rng.choice(["1", "L", "LA", "P", "RGBA", "I", "I;16", "F", "CMYK", "YCbCr", "PA", "La"])
            base = Image.open(self.seeds / "image.png").convert("RGB")
            try:
                image = base.convert(mode)
                ext = {"F": ".tiff", "CMYK": ".jpg", "YCbCr": ".jpg", "I": ".png", "I;16": ".png"}.get(mode, ".png")
                target = directory / f"input{ext}"
                image.save(target)
                mutation = f"valid image in mode {mode} ({ext})"
            except (ValueError, OSError, KeyError) as err:
                base.save(target, format=fmt)
                mutation = f"plain {fmt} (mode {mode} not writable: {type(err).__name__})"
        elif roll < 0.35:
            target.write_bytes(b"")
            mutation = self._special_file(rng, target)
        else:
            blob, mutation = mut.mutate_image(rng, (self.seeds / f"image{IMAGE_FORMATS[fmt]}").read_bytes(), fmt)
            target.write_bytes(blob)
            mutation = f"{fmt}: {mutation}"
        processor = Swinv2ImageProcessor(size={"height": 32, "width": 32})
        entries = {
            "Swinv2ImageProcessor(image path)": lambda: processor(str(target)),
            "Swinv2ImageProcessor([path, path])": lambda: processor([target, str(target)]),
            "open_image": lambda: open_image(target),
        }
        entry = rng.choice(list(entries))
        case = self._case(entry, mutation, directory, entries[entry], target.name)
        case.target = target
        return case

    # -- command line
    def _cli_argv(self, rng: random.Random, directory: Path) -> tuple[list[str], str, list[str], bool]:
        """(argv, mutation, names, json) of a CLI scenario built from a mutated input."""
        scenario = rng.choice(["info", "classify-model", "classify-image", "convert", "convert-payload", "args"])
        if scenario in ("info", "classify-model"):
            inner = rng.choice(["config_json", "preprocessor_json", "safetensors"])
            case = getattr(self, f"_{inner}")(rng, directory)
            model = next((p for p in directory.iterdir() if p.is_dir()), None) or self._copy("model", directory)
            if inner == "safetensors" and (scenario == "info" or "timm.safetensors" in case.names):
                self.invalid = False  # info reads no weights; classify here uses the model directory's own
            if scenario == "info":
                argv = ["info", str(model)] + (["--config"] if rng.random() < 0.2 else [])
                return argv, case.mutation, case.names, False
            image = directory / "image.png"
            if not image.exists():
                self._copy("image.png", directory)
            return ["classify", str(image), "--model", str(model), "--json"], case.mutation, case.names, True
        if scenario == "classify-image":
            case = self._image(rng, directory)
            self._copy("model", directory)
            image = case.target
            if image is not None and image.is_dir():
                self.invalid = False  # classify searches a directory for images: an empty one is no error
            argv = ["classify", str(image), "--model", str(directory / "model"), "--json", "--top-k", "2"]
            return argv, case.mutation, case.names, True
        if scenario in ("convert", "convert-payload"):
            inner = "checkpoint_pth" if scenario == "convert" else "pickle_payload"
            case = getattr(self, f"_{inner}")(rng, directory)
            source = case.target
            argv = ["convert", str(source), str(directory / "out"), "--config", str(directory / "config.json")]
            if rng.random() < 0.2:
                argv[3:] = ["--variant", VARIANT]
            if rng.random() < 0.3:
                argv += ["--to", "timm"]
            return argv, case.mutation, case.names, False
        model = self._copy("model", directory)
        image = self._copy("image.png", directory)
        bad = rng.choice(
            [
                ["--top-k", "0"],
                ["--top-k", "-1"],
                ["--top-k", str(10**30)],
                ["--top-k", "1e999"],
                ["--batch-size", "0"],
                ["--batch-size", "-3"],
                ["--device", "cuda:99"],
                ["--device", "nope"],
                ["--device", "meta"],
            ]
        )
        argv = rng.choice(
            [
                ["classify", str(image), "--model", str(model), "--json", *bad],
                ["classify", str(directory / "missing.png"), "--model", str(model)],
                ["classify", str(image), "--model", str(directory / "nothing")],
                ["info", str(directory / "nothing")],
                ["info", "swinv2-tiny-patch4-window8-25"],
                ["convert", str(directory / "nothing.pth"), str(directory / "out"), "--variant", VARIANT],
                ["convert", str(model), str(model), "--to", "hf"],
                ["convert", str(model), str(directory / "out.pth"), "--to", "timm", "--config", str(image)],
                ["features", str(image), "--model", str(model), "--out", str(directory / "f.txt")],
                [
                    "features",
                    str(image),
                    "--model",
                    str(model),
                    "--out",
                    str(directory / "f.npy"),
                    "--stages",
                    "stage9",
                ],
                ["classify", str(image), "--model", str(model), "--random-weights", "--top-k", "99"],
            ]
        )
        return (
            argv,
            f"arguments {argv[0]} {' '.join(a for a in argv[1:] if not a.startswith('/'))}",
            [],
            "--json" in argv,
        )

    def _cli(self, rng: random.Random, directory: Path) -> Case:
        argv, mutation, names, json_output = self._cli_argv(rng, directory)
        case = Case(
            -1,
            "",
            f"cli.main {argv[0]}",
            mutation,
            directory,
            lambda: None,
            names=names,
            cli="inprocess",
            argv=argv,
            json_output=json_output,
            marker=directory / "PWNED",
        )
        return case

    def _cli_console(self, rng: random.Random, directory: Path) -> Case:
        argv, mutation, names, json_output = self._cli_argv(rng, directory)
        case = Case(
            -1,
            "",
            f"swinv2 {argv[0]} (console)",
            mutation,
            directory,
            lambda: None,
            names=names,
            cli="console",
            argv=argv,
            json_output=json_output,
            marker=directory / "PWNED",
        )

        def call() -> Outcome:
            script = Path(sys.executable).parent / "swinv2"
            command = [str(script)] if script.exists() else [sys.executable, "-m", "swinv2.cli"]
            try:
                done = subprocess.run(command + argv, capture_output=True, text=True, timeout=60, errors="replace")
            except subprocess.TimeoutExpired:
                return Outcome("finding", "timeout", "console script ran over 60 s", "console script hangs")
            return judge_cli(case, done.returncode, done.stdout, done.stderr)

        case.call = call
        return case
