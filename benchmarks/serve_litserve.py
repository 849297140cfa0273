"""The serving peer: LitServe batching a `transformers.pipeline` on the exported folder (bfloat16 unless
SERVE_BASELINE_DTYPE says otherwise), with the same batching as `emotion-lightning serve` (at most 64 texts a batch,
20 ms waiting for company). Run by serve_load.py:
SERVE_BASELINE_MODEL=FOLDER SERVE_PORT=PORT [SERVE_BASELINE_DTYPE=bfloat16|float32 SERVE_MAX_BATCH=64
SERVE_BATCH_TIMEOUT=0.02] python ..."""

import os

import litserve as ls
import torch
from transformers import pipeline


class EmotionAPI(ls.LitAPI):
    def setup(self, device):
        self.classifier = pipeline(
            "text-classification",
            model=os.environ["SERVE_BASELINE_MODEL"],
            dtype=getattr(torch, os.environ.get("SERVE_BASELINE_DTYPE", "bfloat16")),
            top_k=None,
            truncation=True,
            device=device,
        )

    def decode_request(self, request):
        return request["text"]

    def predict(self, texts):
        return self.classifier(list(texts), batch_size=len(texts))

    def encode_response(self, scores):
        best = max(scores, key=lambda score: score["score"])
        return {
            "label": best["label"],
            "score": best["score"],
            "probabilities": {s["label"]: s["score"] for s in scores},
        }


if __name__ == "__main__":
    api = EmotionAPI(
        max_batch_size=int(os.environ.get("SERVE_MAX_BATCH", "64")),
        batch_timeout=float(os.environ.get("SERVE_BATCH_TIMEOUT", "0.02")),
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1)
    server.run(port=int(os.environ["SERVE_PORT"]), host="127.0.0.1", log_level="warning", generate_client_file=False)
