"""How much of the teacher a model keeps, measured without labels and without fine-tuning.

Fine-tuning scores of small models move by points from seed to seed and learning rate to
learning rate, so they are a slow and noisy way to compare design choices. Sentence similarity
is a fast one: the default teacher (all-MiniLM-L6-v2) is a sentence-embedding model, and a
student that keeps what the teacher knows puts sentences at similar angles.

- `similarity_retention`: on sentence pairs drawn from the corpus (half of them consecutive
  sentences of one paragraph, half two unrelated sentences, so that similarities spread), the
  Spearman correlation (x 100) between the teacher's cosine similarities and the model's, both
  from mean-pooled last hidden states. 100: the model ranks every pair as the teacher does.
- `mrpc_auc`: zero-shot paraphrase detection on the MRPC dev set, the ROC AUC (x 100) of the
  cosine similarity of the two sentences against the paraphrase labels (50: chance). It needs
  the GLUE data, so it is reported where a data folder is given.

`retention_difference` says whether two models' retentions differ beyond the choice of pairs: the
difference with a 95% paired-bootstrap interval (pairs resampled, both models on each resample).

`benchmarks/retention.py` reports them for a family, its same-budget baselines and the teacher.
"""

import random

import numpy as np
import torch

from .metrics import rankdata, spearman_corrcoef


def corpus_sentence_pairs(corpus=None, count=1000, seed=0):
    """`count` sentence pairs from a plain-text corpus (default: the embedded Wikipedia sample):
    half are consecutive sentences of one line, half two sentences of different lines."""
    from .data import DEFAULT_CORPUS, open_corpus_file

    path = corpus or DEFAULT_CORPUS
    with open_corpus_file(path) as handle:
        paragraphs = [_sentences(line) for line in handle]
    rng = random.Random(seed)
    related = [(p[i], p[i + 1]) for p in paragraphs for i in range(len(p) - 1)]
    sentences = [(index, s) for index, p in enumerate(paragraphs) for s in p]
    if len(related) < count // 2 or len(sentences) < 2:
        raise ValueError(f"{path}: too few sentences for {count} pairs ({len(related)} consecutive pairs).")
    pairs = rng.sample(related, count // 2)
    while len(pairs) < count:
        (a_line, a), (b_line, b) = rng.sample(sentences, 2)
        if a_line != b_line:
            pairs.append((a, b))
    return pairs


def _sentences(line, min_words=4):
    parts = [part.strip() for part in line.replace("? ", "?\n").replace("! ", "!\n").replace(". ", ".\n").split("\n")]
    return [part for part in parts if len(part.split()) >= min_words]


@torch.no_grad()
def sentence_embeddings(model, tokenizer, texts, batch_size=64, max_length=128):
    """Mean-pooled last hidden states (over real tokens) of `texts`, as a float32 `(n, width)` tensor."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(device)
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        chunks.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())
    return torch.cat(chunks)


def pair_cosines(model, tokenizer, pairs):
    """Cosine similarity of the two sentences of every pair, as a numpy array."""
    first = sentence_embeddings(model, tokenizer, [a for a, _ in pairs])
    second = sentence_embeddings(model, tokenizer, [b for _, b in pairs])
    return torch.nn.functional.cosine_similarity(first, second).numpy()


def retention_of(cosines, teacher_cosines):
    """Spearman x 100 between a model's pair cosines and the teacher's on the same pairs."""
    return 100 * spearman_corrcoef(cosines, teacher_cosines)


def similarity_retention(model, teacher_cosines, tokenizer, pairs):
    """`retention_of` `model` on `pairs`, against the teacher's cosines (`pair_cosines(teacher, ...)`,
    computed once)."""
    return retention_of(pair_cosines(model, tokenizer, pairs), teacher_cosines)


def retention_difference(cosines, other_cosines, teacher_cosines, resamples=1000, seed=0):
    """`(difference, low, high)`: the retention of the model with `cosines` minus that of the model
    with `other_cosines` (both `pair_cosines` on the same pairs), and the 2.5th and 97.5th
    percentiles of that difference over `resamples` bootstrap resamples of the pairs."""
    cosines, other_cosines, teacher_cosines = map(np.asarray, (cosines, other_cosines, teacher_cosines))
    if not len(cosines) == len(other_cosines) == len(teacher_cosines):
        raise ValueError("retention_difference needs the cosines of both models and the teacher on the same pairs.")

    def difference(index):
        reference = teacher_cosines[index]
        return retention_of(cosines[index], reference) - retention_of(other_cosines[index], reference)

    rng = np.random.default_rng(seed)
    samples = [difference(rng.integers(0, len(cosines), len(cosines))) for _ in range(resamples)]
    low, high = np.percentile(samples, [2.5, 97.5])
    return difference(np.arange(len(cosines))), float(low), float(high)


def roc_auc(scores, labels):
    """Area under the ROC curve (the probability that a positive outranks a negative; ties count half)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("roc_auc needs both positive and negative labels.")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def mrpc_pairs(data_dir):
    """`(pairs, labels)` of the MRPC dev set in a GLUE data folder."""
    from .glue import load_glue_split

    dev = load_glue_split("mrpc", "validation", data_dir)
    return list(zip(dev["sentence1"], dev["sentence2"])), list(dev["label"])


def mrpc_auc(model, tokenizer, pairs, labels):
    """Zero-shot MRPC: ROC AUC x 100 of the pairs' cosine similarity against the paraphrase labels."""
    return 100 * roc_auc(pair_cosines(model, tokenizer, pairs), labels)
