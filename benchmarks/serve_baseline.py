"""The server a user would write without emotion-lightning serve: FastAPI around transformers.pipeline, one request
a call. Run by serve_load.py: SERVE_BASELINE_MODEL=FOLDER SERVE_BASELINE_DTYPE=float32|bfloat16 uvicorn ..."""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

classifier = pipeline(
    "text-classification",
    model=os.environ["SERVE_BASELINE_MODEL"],
    dtype=getattr(torch, os.environ.get("SERVE_BASELINE_DTYPE", "float32")),
    top_k=None,
    truncation=True,
)
app = FastAPI()


class Request(BaseModel):
    text: str


@app.post("/predict")
def predict(request: Request) -> dict:
    scores = classifier(request.text)[0]
    best = max(scores, key=lambda score: score["score"])
    return {"label": best["label"], "score": best["score"], "probabilities": {s["label"]: s["score"] for s in scores}}


@app.get("/health")
def health() -> str:
    return "ok"
