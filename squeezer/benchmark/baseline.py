"""The out-of-the-box deployment the benchmark compares against: FastAPI calling the model per request.

SentenceTransformer.encode for sentence-transformers folders, else a transformers pipeline; run with
`uvicorn squeezer.benchmark.baseline:app` and BASELINE_MODEL=<folder> (what `squeezer bench` calls rung (a)).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
_folder = Path(os.environ["BASELINE_MODEL"])
if (_folder / "modules.json").is_file():
    from sentence_transformers import SentenceTransformer

    _model = SentenceTransformer(str(_folder), device="cpu")

    def _run(text: str | list[str]) -> list:
        return _model.encode(text).tolist()
else:
    from transformers import pipeline

    _pipe = pipeline(os.environ.get("BASELINE_TASK", "feature-extraction"), model=str(_folder))

    def _run(text: str | list[str]) -> list:
        return _pipe(text)


class Body(BaseModel):
    inputs: str | list[str]
    options: dict = {}


@app.post("/models/{model_id:path}")
def infer(model_id: str, body: Body) -> list:
    return _run(body.inputs)
