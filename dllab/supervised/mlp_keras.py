"""The seed's Keras MLP (questions 5, 9, 32): an 8-input 12-8-1 network, `compile`, `fit`, `evaluate`.

Data: 8 real features of the breast-cancer table bundled with scikit-learn (see
`dllab.data.tabular`). Measured: test accuracy from `evaluate`, checked against the accuracy
recomputed from `predict` (what `evaluate` reports is what the model does), and compared with
two references computed in the same run: always predicting the majority class of the training
set, and scikit-learn's logistic regression on the same standardized features.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from dllab.data.tabular import FEATURE_COUNT, load_breast_cancer_8
from dllab.supervised.common import report_history, shuffled_labels


def build_mlp(features: int = FEATURE_COUNT, use_bias: bool = True) -> keras.Model:
    """The seed's network: Dense(12, relu) - Dense(8, relu) - Dense(1, sigmoid)."""
    return keras.Sequential([
        keras.Input((features,)),
        layers.Dense(12, activation="relu", use_bias=use_bias),
        layers.Dense(8, activation="relu", use_bias=use_bias),
        layers.Dense(1, activation="sigmoid", use_bias=use_bias),
    ], name="mlp")


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, fault: str = "none") -> dict[str, float]:
    table = load_breast_cancer_8(ctx.seed)
    train, validation, test = table.train, table.validation, table.test
    labels = shuffled_labels(train.labels, ctx.seed) if fault == "labels-shuffled" else train.labels
    model = build_mlp(use_bias=fault != "no-bias")  # the negative controls' mistakes
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
    fitted = model.fit(train.features, labels, epochs=epochs, batch_size=batch_size, verbose=0,
                       validation_data=(validation.features, validation.labels))
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    report_history(ctx, history, "mlp", f"Keras ({keras.backend.backend()}) 12-8-1 MLP, breast cancer (8 features)")
    evaluated_on = train if fault == "evaluate-on-train" else test  # the right split: test
    evaluated = model.evaluate(evaluated_on.features, evaluated_on.labels, verbose=0, return_dict=True)
    probabilities = np.asarray(model.predict(test.features, verbose=0)).reshape(-1)
    predicted_accuracy = float(np.mean((probabilities > 0.5) == (test.labels == 1)))

    from sklearn.linear_model import LogisticRegression

    majority = float(np.round(train.labels.mean()))
    majority_accuracy = float(np.mean(test.labels == majority))
    logistic = LogisticRegression(max_iter=1000).fit(train.features, train.labels)
    logistic_accuracy = float(logistic.score(test.features, test.labels))
    return {
        "test_accuracy": evaluated["accuracy"],
        "test_loss": evaluated["loss"],
        "evaluate_vs_predict_difference": abs(evaluated["accuracy"] - predicted_accuracy),
        "majority_accuracy": majority_accuracy,
        "logistic_regression_accuracy": logistic_accuracy,
        "advantage_over_majority": evaluated["accuracy"] - majority_accuracy,
        "advantage_over_logistic": evaluated["accuracy"] - logistic_accuracy,
        "parameters": model.count_params(),
    }
