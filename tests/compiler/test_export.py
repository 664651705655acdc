"""Export: every tiny architecture and head to an fp32 graph with dynamic axes, matching PyTorch; clear errors."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from squeezer.backends.base import HEAD_OUTPUTS, Batch
from squeezer.backends.onnx_backend import OnnxBackend
from squeezer.backends.torch_backend import TorchBackend
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.export import ExportError, export
from squeezer.compiler.optimize import optimize
from squeezer.config import BackendConfig, ModelConfig
from squeezer.loading import load_info
from squeezer.sources import ModelSource
from squeezer.testing import tiny_encoders

HEADS = [h for h in tiny_encoders.HEADS if h != "zero-shot"]  # zero-shot is a sequence-classification head
TEXTS = ["Paris", "The quick brown fox jumps over the lazy dog near the river bank today.", "Numbers: 3.14, 42!"]


@pytest.mark.parametrize("arch", tiny_encoders.ARCHS)
@pytest.mark.parametrize("head", HEADS)
def test_export_matches_torch_on_new_shapes(arch: str, head: str, tiny_model: Callable[[str, str], Path], tmp_path: Path) -> None:
    import onnx

    folder = tiny_model(arch, head)
    source = ModelSource("tiny", folder)
    info, _ = load_info(source, ModelConfig())
    exported = export(folder, head, info, tmp_path / "model.onnx")
    assert exported.outputs == tuple(HEAD_OUTPUTS[head])
    graph = onnx.load(str(exported.path))
    for tensor in graph.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], f"{tensor.name} axes are not dynamic"

    enc = [info.tokenizer(text)["input_ids"] for text in TEXTS]
    types = [[0] * len(ids) for ids in enc] if "token_type_ids" in exported.inputs else None
    batch = Batch.pad(enc, types, info.tokenizer.pad_token_id or 0)  # batch 3, lengths unlike the traced ones
    got = OnnxBackend.from_graph(exported.path, head).forward(batch)
    reference = TorchBackend(source, head, ModelConfig(), BackendConfig(), info.max_length)
    for row, ids in enumerate(enc):
        want = reference.forward(Batch.pad([ids], [types[row]] if types else None, 0))
        for name, per_token in HEAD_OUTPUTS[head].items():
            actual = got[name][row, : len(ids)] if per_token else got[name][row]
            np.testing.assert_allclose(actual, want[name][0], atol=1e-4, rtol=1e-4)


def test_tokenizer_without_segment_ids_gives_graph_without_them(exported_bert, tiny_model, tmp_path: Path) -> None:
    exported, _ = exported_bert
    assert exported.inputs == ("input_ids", "attention_mask", "token_type_ids")
    folder = tiny_model("roberta", "base")
    info, _ = load_info(ModelSource("tiny", folder), ModelConfig())
    assert export(folder, "base", info, tmp_path / "r.onnx").inputs == ("input_ids", "attention_mask")


MODELING = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class SvdConfig(PretrainedConfig):
    model_type = "svd-encoder"

    def __init__(self, vocab_size=30522, hidden_size=8, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size


class SvdModel(PreTrainedModel):
    config_class = SvdConfig

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        u, s, v = torch.linalg.svd(self.embeddings(input_ids), full_matrices=False)  # no ONNX export for SVD
        return BaseModelOutput(last_hidden_state=u * s.unsqueeze(-2))
'''


def svd_model(folder: Path) -> Path:
    """A remote-code model whose forward uses an op the ONNX exporter does not support."""
    folder.mkdir()
    (folder / "modeling_svd.py").write_text(MODELING)
    sys.path.insert(0, str(folder))
    try:
        import modeling_svd  # type: ignore[import-not-found]

        modeling_svd.SvdModel(modeling_svd.SvdConfig()).save_pretrained(folder)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("modeling_svd", None)
    tiny_encoders._wordpiece_tokenizer("bert", folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_svd.SvdConfig", "AutoModel": "modeling_svd.SvdModel"}
    config["architectures"] = ["SvdModel"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_unsupported_op_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    folder = svd_model(tmp_path / "svd-model")
    out = tmp_path / "out"
    config = OptimizeConfig(task="feature-extraction", trust_remote_code=True, cache=False)
    with pytest.raises(ExportError, match=r"cannot export SvdModel to ONNX: .*linalg_svd.* not supported"):
        optimize(ModelSource("svd", folder), out, config, progress=lambda _: None)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["svd-model"]  # no staging folder left behind


def test_unknown_architecture_is_a_clear_error(tiny_model, tmp_path: Path) -> None:
    folder = tmp_path / "weird"
    shutil.copytree(tiny_model("bert", "base"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "not-a-real-architecture"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="cannot export .*not-a-real-architecture"):
        optimize(ModelSource("weird", folder), tmp_path / "out", OptimizeConfig(cache=False), progress=lambda _: None)
    assert not (tmp_path / "out").exists()
