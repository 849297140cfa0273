"""``emotion-lightning serve``: predictions over HTTP.

:mod:`~emotion_lightning.serve.server` starts and stops the server (settings, socket, signals);
:mod:`~emotion_lightning.serve.app` reads and checks every request before it is queued;
:mod:`~emotion_lightning.serve.openapi` describes the API once (fields, statuses) and makes its OpenAPI document;
:mod:`~emotion_lightning.serve.workers` batches the queued texts for the model worker processes, supervised;
:mod:`~emotion_lightning.serve.model_process` is one of those processes.
"""
