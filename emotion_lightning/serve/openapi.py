"""``serve``'s HTTP API described once: the request's fields, the answer's, the statuses; and the OpenAPI document
made from them (the app reads requests and the model workers answer by the same tables)."""

from __future__ import annotations

API_PATH = "/predict"
API_KEY_HEADER = "X-API-Key"
# The body of POST /predict: an object of exactly one of these fields (the request schema adds the server's own limit
# on texts).
REQUEST_FIELDS = {"text": {"type": "string"}, "texts": {"type": "array", "minItems": 1, "items": {"type": "string"}}}
# Every status POST /predict is answered with, and when. tests/test_serve.py checks that these are exactly the statuses
# the app and the header guard answer with.
PREDICT_ANSWERS = {
    200: 'one Prediction for {"text"}; {"predictions": [Prediction, ...]} for {"texts"}',
    400: "not UTF-8 JSON, a key given twice, a header given twice",
    401: "the API key is missing or wrong",
    408: "the body did not arrive in time",
    413: "the body or the list of texts is too large",
    415: "the Content-Type is not application/json",
    421: "a Host this server does not answer for (serve --allowed_hosts)",
    422: "other fields, or a text that is not a string with a visible character",
    431: "the request line and headers are over 16 KiB",
    500: "the model failed on these texts (the server goes on)",
    503: "no model worker can answer now (loading, or started again after a crash)",
}
# One text's answer: the Prediction fields a model worker answers with.
PREDICTION_FIELDS = {
    "label": {"type": "string"},
    "score": {"type": "number", "description": "the label's probability"},
    "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
    "truncated": {"type": "boolean", "description": "the text was longer than the model's max_length and was cut"},
}


def openapi_document(max_texts: int) -> dict:
    """The API's OpenAPI document, with this server's limit on texts a request."""
    prediction, problem = {"$ref": "#/components/schemas/Prediction"}, {"$ref": "#/components/schemas/Problem"}
    predictions = {"type": "object", "properties": {"predictions": {"type": "array", "items": prediction}}}
    forms = [
        {"type": "object", "required": [name], "additionalProperties": False, "properties": {name: schema}}
        for name, schema in REQUEST_FIELDS.items()
        for schema in [{**schema, "maxItems": max_texts} if schema["type"] == "array" else schema]
    ]
    responses = {
        str(status): {
            "description": description,
            "content": {
                "application/json": {"schema": {"oneOf": [prediction, predictions]} if status == 200 else problem}
            },
        }
        for status, description in PREDICT_ANSWERS.items()
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "emotion-lightning serve", "version": "1"},
        "components": {
            "securitySchemes": {"APIKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}},
            "schemas": {
                "Prediction": {"type": "object", "properties": PREDICTION_FIELDS},
                "Problem": {"type": "object", "properties": {"detail": {"type": "string"}}},
            },
        },
        "security": [{"APIKey": []}],
        "paths": {
            API_PATH: {
                "post": {
                    "summary": "Classify one text, or a list of texts",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": forms},
                                "example": {"text": "I am furious about this."},
                            }
                        },
                    },
                    "responses": responses,
                }
            },
            "/health": {
                "get": {
                    "summary": "200 once a model worker is ready, else 503",
                    "security": [],
                    "responses": {"200": {"description": "ok"}, "503": {"description": "not ready"}},
                }
            },
            "/info": {
                "get": {
                    "summary": "The labels, the model's max_length and the server's limits",
                    "responses": {"200": {"description": "settings"}},
                }
            },
        },
    }
