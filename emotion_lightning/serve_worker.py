"""What runs in LitServe's model worker process for ``emotion-lightning serve`` (imported only when serving)."""

from __future__ import annotations

import signal
from dataclasses import asdict
from pathlib import Path

import litserve as ls

from emotion_lightning.console import quiet_libraries
from emotion_lightning.serve import API_PATH, TextsToClassify


class EmotionAPI(ls.LitAPI):
    """The model through :class:`EmotionPredictor` (its encoding, precision and batching), one call a batch of
    requests; each request's texts come back as its own answer."""

    def __init__(
        self, model: Path, precision: str, batch_size: int, max_batch_size: int, batch_timeout: float, workers: int
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=API_PATH)
        self.model_path, self.precision, self.batch_size, self.workers = model, precision, batch_size, workers

    def setup(self, device):
        # Ctrl-C reaches every process of the terminal; this one stays until the requests in flight are
        # answered, and the server stops it after that.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        quiet_libraries()
        import torch

        from emotion_lightning.predictor import EmotionPredictor

        if device == "cpu":
            # Workers that share the cores: more threads than cores makes each forward pass several times slower.
            torch.set_num_threads(max(1, torch.get_num_threads() // self.workers))

        self.predictor = EmotionPredictor.load(
            self.model_path, device=device, precision=self.precision, batch_size=self.batch_size
        )

    def decode_request(self, request) -> TextsToClassify:
        # The HTTP side (RequestGate) checked it before it was queued.
        return TextsToClassify.of(request)

    def batch(self, inputs):
        return list(inputs)

    def predict(self, requests):
        alone = isinstance(requests, TextsToClassify)  # max_batch_size 1: LitServe passes the request itself
        requests = [requests] if alone else requests
        predictions = iter(self.predictor([text for request in requests for text in request.texts]))
        answers = [(request.single, [next(predictions) for _ in request.texts]) for request in requests]
        return answers[0] if alone else answers

    def unbatch(self, output):
        return output

    def encode_response(self, output) -> dict:
        single, predictions = output
        objects = [{key: value for key, value in asdict(p).items() if key != "text"} for p in predictions]
        return objects[0] if single else {"predictions": objects}
