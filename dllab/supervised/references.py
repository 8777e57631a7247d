"""Independent references for the supervised scenarios, in float64 numpy and free of any
framework: what a training step or a recurrent layer must compute, written out by hand, so that
torch's and Keras's results are checked against arithmetic they do not share.

- `adam_mlp_reference`: a Dense-ReLU-Dense classifier trained by Adam on softmax cross-entropy,
  forward pass, gradients and update by hand (torch's or Keras's Adam formula);
- `recurrent_last_state`: a plain RNN, LSTM or GRU stepped over the time axis one step at a time,
  in torch's weight layout (the Keras weights are converted to it).
"""

from __future__ import annotations

import numpy as np


def _mlp_gradients(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Gradients of the mean softmax cross-entropy of logits relu(x W1 + b1) W2 + b2."""
    w1, b1, w2, b2 = weights
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0.0)
    logits = hidden @ w2 + b2
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    d_logits = probabilities
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_hidden = (d_logits @ w2.T) * (pre > 0)
    return [x.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_logits, d_logits.sum(axis=0)]


def adam_mlp_reference(weights: list[np.ndarray], batches, learning_rate: float, style: str,
                       beta_1: float = 0.9, beta_2: float = 0.999) -> list[np.ndarray]:
    """Weights [W1 (in, hidden), b1, W2 (hidden, out), b2] after one Adam step per (x, y) batch.

    `style` picks where epsilon goes: "torch" (eps 1e-8 added to sqrt(v_hat)) or "keras"
    (eps 1e-7 added to sqrt(v), the bias corrections folded into the step size)."""
    if style not in ("torch", "keras"):
        raise ValueError(f"style must be 'torch' or 'keras', got {style!r}")
    params = [np.asarray(w, np.float64).copy() for w in weights]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for step, (x, y) in enumerate(batches, start=1):
        gradients = _mlp_gradients(params, np.asarray(x, np.float64), np.asarray(y))
        correction_1, correction_2 = 1 - beta_1 ** step, 1 - beta_2 ** step
        for p, m, v, g in zip(params, first, second, gradients):
            m += (1 - beta_1) * (g - m)
            v += (1 - beta_2) * (g * g - v)
            if style == "torch":
                p -= learning_rate / correction_1 * m / (np.sqrt(v) / np.sqrt(correction_2) + 1e-8)
            else:
                p -= learning_rate * np.sqrt(correction_2) / correction_1 * m / (np.sqrt(v) + 1e-7)
    return params


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def recurrent_last_state(cell: str, sequences: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray,
                         b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """The hidden state after the last time step of `sequences` (batch, time, features), one
    step at a time along axis 1, with torch's weights: w_ih (gates*hidden, features), w_hh
    (gates*hidden, hidden), gate order i, f, g, o (LSTM) and r, z, n (GRU)."""
    x = np.asarray(sequences, np.float64)
    w_ih, w_hh, b_ih, b_hh = (np.asarray(a, np.float64) for a in (w_ih, w_hh, b_ih, b_hh))
    hidden_size = w_hh.shape[1]
    h = np.zeros((len(x), hidden_size))
    c = np.zeros_like(h)
    for t in range(x.shape[1]):
        inputs, recurrent = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if cell == "rnn":
            h = np.tanh(inputs + recurrent)
        elif cell == "lstm":
            i, f, g, o = np.split(inputs + recurrent, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        elif cell == "gru":
            (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(inputs, 3, axis=1), np.split(recurrent, 3, axis=1)
            r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
            h = (1 - z) * np.tanh(i_n + r * h_n) + z * h
        else:
            raise ValueError(f"cell must be rnn, lstm or gru, got {cell!r}")
    return h
