"""The classifier's logits with its last transformer layer run for each text's first token alone.

BERT's and DistilBERT's heads read one hidden state per text: the last layer's output at the text's first token
([CLS]). Of the last layer, every token's keys and values are needed, but the query, the attention's output and the
feed-forward of the other tokens are computed only to be thrown away. Run for the first tokens alone, that layer
leaves out 10/12 of its matrix products (MiniLM: one of six layers) and gives the same logits, and in training the
same gradients (the rows left out never reached the loss). Padded batches (a text's first token in column 0) and
packed rows (:mod:`emotion_lightning.packing`, ``starts``) alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask

# Architectures whose head reads the first token's final hidden state, and whose layers this module runs.
FIRST_TOKEN_MODEL_TYPES = ("bert", "distilbert")


def reads_first_token(model) -> bool:
    """Whether a Hugging Face classifier's head reads its first token alone (BERT, DistilBERT)."""
    return model.config.model_type in FIRST_TOKEN_MODEL_TYPES


def classifier_logits(model, input_ids, attention_mask, position_ids=None, starts=None) -> torch.Tensor:
    """A Hugging Face classifier's logits: the last layer for the first tokens alone where its head reads nothing else
    (and for packed rows, which only such heads are given), else the model's own forward."""
    if starts is not None or reads_first_token(model):
        return first_token_logits(model, input_ids, attention_mask, position_ids, starts)
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


def first_token_logits(model, input_ids, attention_mask, position_ids=None, starts=None) -> torch.Tensor:
    """Logits of a ``BertForSequenceClassification`` or ``DistilBertForSequenceClassification``, for padded texts
    (``attention_mask``: texts x length, 1 on tokens) or packed ones (``attention_mask``: rows x 1 x length x length,
    ``position_ids``, and ``starts``: each text's (row, column), in the order the logits come in)."""
    base = model.base_model
    distilbert = model.config.model_type == "distilbert"
    hidden = base.embeddings(input_ids=input_ids, position_ids=position_ids)
    # The mask each layer takes, as the model makes it (None where nothing is masked: the faster kernel). Positional:
    # transformers 5.0 names the embeddings `input_embeds`, later versions `inputs_embeds`.
    mask = create_bidirectional_mask(base.config, hidden, attention_mask)
    *layers, last = base.transformer.layer if distilbert else base.encoder.layer
    for layer in layers:
        hidden = layer(hidden, mask)
    if starts is None:
        rows, first, first_mask = None, hidden[:, 0], None if mask is None else mask[:, :, :1]
    else:
        rows, columns = starts[:, 0], starts[:, 1]
        first, first_mask = hidden[rows, columns], None if mask is None else mask[rows, :, columns][:, :, None]
    first = _last_layer_at(last, hidden, first, first_mask, rows, distilbert)
    if distilbert:  # its head: pre_classifier, ReLU, dropout, classifier
        return model.classifier(model.dropout(torch.relu(model.pre_classifier(first))))
    return model.classifier(model.dropout(base.pooler(first[:, None])))  # BERT: pooler, dropout, classifier


def _last_layer_at(layer, hidden, first, mask, rows, distilbert: bool) -> torch.Tensor:
    """``layer``'s output at the first tokens (``first``: their inputs), attending to every token of their row
    (``rows``: each text's row of ``hidden``; None when text i is row i)."""
    attention = layer.attention if distilbert else layer.attention.self
    query, key, value = (
        (attention.q_lin, attention.k_lin, attention.v_lin)
        if distilbert
        else (attention.query, attention.key, attention.value)
    )
    size = attention.attention_head_size

    def heads(states: torch.Tensor) -> torch.Tensor:  # (texts, tokens, width) -> (texts, heads, tokens, size)
        return states.unflatten(-1, (-1, size)).transpose(1, 2)

    keys, values = heads(key(hidden)), heads(value(hidden))
    if rows is not None:  # packed: each text attends to its own row (the mask keeps it to its own tokens)
        keys, values = keys[rows], values[rows]
    context = F.scaled_dot_product_attention(
        heads(query(first[:, None])),
        keys,
        values,
        attn_mask=mask,
        dropout_p=attention.dropout.p if attention.training else 0.0,
        scale=size**-0.5,
    )
    context = context.transpose(1, 2).flatten(2)  # (texts, 1, width)
    inputs = first[:, None]
    if distilbert:
        attended = layer.sa_layer_norm(attention.out_lin(context) + inputs)
        return layer.output_layer_norm(layer.ffn(attended) + attended)[:, 0]
    attended = layer.attention.output(context, inputs)
    return layer.output(layer.intermediate(attended), attended)[:, 0]
