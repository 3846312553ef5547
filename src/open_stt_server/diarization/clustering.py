"""Voice embeddings → speaker labels: average-linkage clustering on cosine distance, with the count found.

Without a hint the tree is cut where merging would join groups whose voices are further apart than
`MERGE_DISTANCE` (one minus the mean cosine similarity between their windows). A hint (`num_speakers`, or the
`min_speakers`/`max_speakers` bounds) cuts it into that many groups instead. The labels are then refined by
giving each window to the nearest group centre, and groups too small to be a speaker (a cough, a laugh, a
window straddling two voices) are folded into their nearest neighbour unless a hint asks for them.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from open_stt_server.diarization.diarizer import SpeakerCount

# Average cosine distance beyond which two groups of 1.6 s windows are taken to be different voices. GE2E
# windows of one voice sit 0.12–0.24 apart on average, different voices 0.33–0.5 (measured on recorded and
# espeak-ng voices; a hint makes the count exact).
MERGE_DISTANCE = 0.33
MIN_SPEAKER_WINDOWS = 3  # a speaker must fill at least this many windows (≈ 1.5 s of speech)
REFINE_ROUNDS = 2


def centroids(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    out = np.zeros((count, embeddings.shape[1]), dtype=np.float32)
    for k in range(count):
        members = embeddings[labels == k]
        if len(members):
            mean = members.mean(axis=0)
            out[k] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return out


def cluster_speakers(embeddings: np.ndarray, count: SpeakerCount | None = None) -> np.ndarray:
    """A label 0..k-1 per embedding (unit vectors, one per window), numbered in order of first appearance."""
    count = count or SpeakerCount()
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=int)
    if n == 1:
        return np.zeros(1, dtype=int)
    tree = linkage(embeddings.astype(np.float64), method="average", metric="cosine")
    found = len(np.unique(fcluster(tree, MERGE_DISTANCE, criterion="distance")))
    wanted = count.clamp(found, n)
    labels = fcluster(tree, wanted, criterion="maxclust") - 1
    labels = _refine(embeddings, _renumber(labels))
    if count.exact is None:
        labels = _fold_small(embeddings, labels, keep=min(count.minimum, n))
    return _renumber(labels)


def _refine(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    for _ in range(REFINE_ROUNDS):
        k = labels.max() + 1
        centres = centroids(embeddings, labels, k)
        moved = np.argmax(embeddings @ centres.T, axis=1)
        if len(np.unique(moved)) < k or np.array_equal(moved, labels):
            break  # a round that would empty a group keeps the tree's answer
        labels = moved
    return labels


def _fold_small(embeddings: np.ndarray, labels: np.ndarray, keep: int) -> np.ndarray:
    while True:
        sizes = np.bincount(labels)
        k = len(sizes)
        smallest = int(np.argmin(sizes))
        if k <= max(keep, 1) or sizes[smallest] >= MIN_SPEAKER_WINDOWS:
            return labels
        centres = centroids(embeddings, labels, k)
        similarity = centres @ centres[smallest]
        similarity[smallest] = -np.inf
        labels = labels.copy()
        labels[labels == smallest] = int(np.argmax(similarity))
        labels = _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels 0, 1, 2, ... in order of first appearance."""
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels], dtype=int)
