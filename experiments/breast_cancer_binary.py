"""Binary classification of scikit-learn's breast cancer data (569 tumours, 30 features, 70/15/15 split):
an MLP with one logit and sigmoid binary cross-entropy (label 1 = benign, scikit-learn's encoding).

Reports accuracy, precision / recall / F1 of the positive class, and the exact ROC curve and ROC-AUC
(plots/roc_curve_test.png); test ROC-AUC >= 0.97 (about 0.998).

    jtrain train --config experiments/breast_cancer_binary.py --workdir runs/breast_cancer
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "breast_cancer"
    config.data.batch_size = 32
    config.model.name = "mlp"
    config.model.hidden_sizes = (32,)
    config.loss.name = "sigmoid_binary_cross_entropy"
    config.train.epochs = 30.0
    config.eval.every_steps = 100
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.checkpoint.every_steps = 0
    return config
