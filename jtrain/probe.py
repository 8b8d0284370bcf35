"""What a method's frozen encoder learned, scored at the end of a run with labels training never saw.

For a method with `Method.embed` (autoencoder, vae, contrastive) on data with class labels (`eval.probe`):
embeddings of the training split (its first `eval.probe_train_examples`) and of the test split (val without
one) from the frozen encoder, then with scikit-learn

    linear_probe_accuracy   LogisticRegression on the standardised training embeddings, scored on test
    knn_accuracy            KNeighborsClassifier (eval.probe_knn_k neighbours, cosine distance), scored on test
    kmeans_nmi, kmeans_ari  KMeans (as many clusters as classes) on the standardised test embeddings against
                            the labels: normalised mutual information and adjusted Rand index

each for the trained encoder and for the same architecture at its initialisation (the run's seed: the state
training started from when it started from scratch), the baseline a representation has to beat. And the pictures
of `Method.pictures` (e.g. reconstructions, samples) from the first test batch.

Every process takes part (the embeddings come back replicated); the caller writes what process 0 computes.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jtrain import components
from jtrain import mesh as mesh_lib

SCORES = ("linear_probe_accuracy", "knn_accuracy", "kmeans_nmi", "kmeans_ari")


@dataclasses.dataclass
class Findings:
    scores: dict | None  # {"split", "train_examples", "encoder": {...}, "random_encoder": {...}}; None = no probe
    embeddings: tuple[np.ndarray, np.ndarray] | None  # the trained encoder's (N, D) held-out embeddings, labels (N,)
    pictures: dict[str, np.ndarray]  # name -> (R, N, H, W, C) in [0, 1]


def at_end(run: components.Run, state) -> Findings | None:
    """The probe and the pictures of a finished run; None for methods without an encoder or pictures."""
    method, config = run.method, run.config
    if not (method.embed or method.pictures):
        return None
    held_out = next((r for r in ("test", "val") if r in run.data.splits), None)
    pictures = _pictures(run, state, held_out or "train") if method.pictures else {}
    labelled = run.data.spec.num_classes > 0 and run.data.spec.target_dtype.startswith("int")
    if not (method.embed and config.eval.probe and labelled and held_out):
        return Findings(None, None, pictures)
    embed = _embed_fn(run)
    limit = config.eval.probe_train_examples
    trained = embeddings(run, embed, state, "train", limit), embeddings(run, embed, state, held_out)
    initial = run.init()  # the same architecture and seed, untrained
    random = embeddings(run, embed, initial, "train", limit), embeddings(run, embed, initial, held_out)
    scores = None
    if jax.process_index() == 0:
        k, seed = config.eval.probe_knn_k, config.seed
        scores = {"split": held_out, "train_examples": int(len(trained[0][1])),
                  "encoder": score(*trained[0], *trained[1], run.data.spec.num_classes, k, seed),
                  "random_encoder": score(*random[0], *random[1], run.data.spec.num_classes, k, seed)}
    return Findings(scores, trained[1], pictures)


def flat(scores: dict) -> dict[str, float]:
    """The scores as scalars for metrics.jsonl / TensorBoard: encoder's by name, the random one's prefixed."""
    return {**scores["encoder"], **{f"random_{k}": v for k, v in scores["random_encoder"].items()}}


def score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, num_classes: int,
          k: int = 10, seed: int = 0) -> dict[str, float]:
    """The four scores of one encoder's embeddings (N, D) against labels (N,)."""
    from sklearn.cluster import KMeans  # scikit-learn only at the end of such runs
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    scaler = StandardScaler().fit(x_train)
    s_train, s_test = scaler.transform(x_train), scaler.transform(x_test)
    probe = LogisticRegression(max_iter=2000).fit(s_train, y_train)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y_train)), metric="cosine").fit(x_train, y_train)
    clusters = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit_predict(s_test)
    return {"linear_probe_accuracy": float(probe.score(s_test, y_test)),
            "knn_accuracy": float(knn.score(x_test, y_test)),
            "kmeans_nmi": float(normalized_mutual_info_score(y_test, clusters)),
            "kmeans_ari": float(adjusted_rand_score(y_test, clusters))}


def _embed_fn(run: components.Run):
    """Jitted (state, batch) -> (embeddings (B, D), targets (B,), mask (B,)), replicated on every device."""
    method, model = run.method, run.model
    fn = lambda state, batch: (method.embed(model, state, batch["inputs"]), batch["targets"], batch["mask"])
    return jax.jit(fn, in_shardings=(run.state_shardings, mesh_lib.batch_sharding(run.mesh)),
                   out_shardings=mesh_lib.replicated(run.mesh))


def embeddings(run: components.Run, embed, state, role: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, D), labels (N,)) of the split's examples in order (its first `limit` when > 0)."""
    xs, ys, seen = [], [], 0
    for local in run.data.eval_batches(role, run.config.data, jax.process_index(), jax.process_count()):
        z, y, mask = jax.device_get(embed(state, run.put_batch(local)))
        keep = np.asarray(mask, bool)
        xs.append(np.asarray(z)[keep])
        ys.append(np.asarray(y)[keep])
        seen += int(keep.sum())
        if limit and seen >= limit:  # every process counts the same global batches: they stop together
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def _pictures(run: components.Run, state, role: str) -> dict[str, np.ndarray]:
    method, model = run.method, run.model
    fn = jax.jit(lambda state, batch, key: method.pictures(model, state, batch, key),
                 in_shardings=(run.state_shardings, mesh_lib.batch_sharding(run.mesh), None),
                 out_shardings=mesh_lib.replicated(run.mesh))
    batch = next(iter(run.data.eval_batches(role, run.config.data, jax.process_index(), jax.process_count())))
    out = fn(state, run.put_batch(batch), jax.random.key(run.config.seed))
    return {name: np.asarray(v) for name, v in jax.device_get(out).items()}
