"""Long documents: reading them whole in windows against truncating them, and what it costs.

    python benchmarks/documents.py                 # both parts; `make bench-documents`
    python benchmarks/documents.py --part quality  # or --part cost

Documents are made offline from the tweets: each is 8 to 40 tweets of one label joined by
spaces (a seeded draw), training documents from the training split, validation and test
documents from theirs. A document is classified by the majority label of its 10 nearest atoms
in a bank of the training documents, each way of reading compared with a bank read the same way:

- chunk pooling, mean or mass-weighted (contract/chunks.py): the document read whole in the
  bundle's windows ("chunk": true in the service, `atomize index --long pool`);
- truncation at the bundle's limit (256 tokens for the default MiniLM bundle) and at 64.

The pooling the bundle uses is chosen on the validation documents (`chosen` in the results);
test accuracy is reported for every document and for those longer than three windows.

cost: the service (`python -m service`, default settings) on 127.0.0.1 answering test documents
with "chunk": true, one per request, against single test tweets, at 8 and 32 closed-loop
clients; items/s and tokens/s (the text's own tokens, [CLS]/[SEP] and overlaps not counted),
and short tweets again with the service's limit at 64 tokens (padding is per batch, so the
longer limit should cost a short input nothing). Results: benchmarks/results/documents.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import describe, machine, running_service  # noqa: E402
from loadgen import run_load  # noqa: E402

from contract import chunks  # noqa: E402
from contract.bundle import load_bundle  # noqa: E402
from contract.runner import ModelRunner  # noqa: E402

log = logging.getLogger("benchmarks.documents")
RESULTS = ROOT / "benchmarks" / "results"
NEIGHBOURS = 10
POOLINGS = ("mean", "mass")
DOCUMENTS = {"train": 600, "validation": 200, "test": 400}
TWEETS_PER_DOCUMENT = (8, 40)


def make_documents(texts: list[str], labels: np.ndarray, count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """`count` documents of 8-40 tweets of one label; each label's tweets are used in a shuffled
    order and reused only once all of them are."""
    rng = np.random.default_rng(seed)
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    position = dict.fromkeys(pools, 0)
    classes = np.asarray(sorted(pools))
    shares = np.asarray([len(pools[c]) for c in classes], float)
    out_texts, out_labels = [], []
    for _ in range(count):
        label = int(rng.choice(classes, p=shares / shares.sum()))
        size = int(rng.integers(TWEETS_PER_DOCUMENT[0], TWEETS_PER_DOCUMENT[1] + 1))
        pool = pools[label]
        picked = [pool[(position[label] + j) % len(pool)] for j in range(size)]
        position[label] += size
        out_texts.append(" ".join(texts[i] for i in picked))
        out_labels.append(label)
    return out_texts, np.asarray(out_labels)


def documents(seed: int = 0) -> dict[str, tuple[list[str], np.ndarray]]:
    from training.datasets.builtin import load_tweets

    data = load_tweets(split_seed=0, limit=None)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    return {name: make_documents(list(split.texts), np.asarray(split.labels), DOCUMENTS[name], seed + i)
            for i, (name, split) in enumerate(splits.items())}


# ---- quality ---------------------------------------------------------------------------------


def run_windows(runner: ModelRunner, components: list[np.ndarray], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, composition) of prepared inputs, in batches of similar length."""
    embedding = np.zeros((len(components), runner.manifest.embedding_dim), np.float32)
    composition = np.zeros((len(components), len(runner.manifest.composition_fields)), np.float32)
    order = np.argsort([len(c) for c in components], kind="stable")
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        embedding[rows], composition[rows] = runner.infer([components[i] for i in rows], ("embedding", "composition"))
    return embedding, composition


def read_documents(bundle, texts: list[str]) -> dict[str, np.ndarray]:
    """Each way of reading: one embedding per document; `windows`: how many windows each needs."""
    fields = bundle.manifest.composition_fields
    runner = ModelRunner(bundle, device="cpu")  # the copy the service runs here (int8 on a CPU)
    grouped = runner.prepare_chunks(texts, max_chunks=64)
    flat = [w.components for group in grouped for w in group]
    embedding, composition = run_windows(runner, flat)
    out: dict[str, np.ndarray] = {"windows": np.asarray([len(g) for g in grouped])}
    for how in POOLINGS:
        pooled, at = [], 0
        for group in grouped:
            ones = [1] * len(group)  # the embedding does not depend on the components' shares
            pooled.append(chunks.pool(embedding[at : at + len(group)], composition[at : at + len(group)], fields, how,
                                      ones, ones)[0])
            at += len(group)
        out[f"chunks ({how})"] = np.stack(pooled)
    limit = bundle.manifest.input.max_components
    for cut in (limit, 64):
        short = ModelRunner(bundle, device="cpu", max_components_per_input=cut)
        out[f"truncate at {cut}"] = run_windows(short, [p.components for p in short.prepare_components(texts)])[0]
    return out


def knn_predict(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """The majority label of each query's k nearest bank atoms (ties: the lower label)."""
    distance = (queries**2).sum(1)[:, None] - 2 * queries @ bank.T + (bank**2).sum(1)[None]
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    votes = bank_labels[nearest]
    classes = int(bank_labels.max()) + 1
    return np.asarray([np.bincount(row, minlength=classes).argmax() for row in votes])


def run_quality(args) -> dict:
    bundle = load_bundle(args.bundle)
    docs = documents(args.seed)
    read = {}
    for name, (texts, _) in docs.items():
        started = time.perf_counter()
        read[name] = read_documents(bundle, texts)
        log.info("%s: %d documents read every way in %.0f s", name, len(texts), time.perf_counter() - started)
    methods = [m for m in read["train"] if m != "windows"]
    rows = []
    long_test = read["test"]["windows"] > 3
    for method in methods:
        row = {"method": method}
        for name in ("validation", "test"):
            predicted = knn_predict(read["train"][method], docs["train"][1], read[name][method])
            row[name] = round(float((predicted == docs[name][1]).mean()), 4)
            if name == "test":
                row["test_longer_than_3_windows"] = (round(float((predicted == docs[name][1])[long_test].mean()), 4)
                                                     if long_test.any() else None)
        rows.append(row)
    by_method = {r["method"]: r for r in rows}
    chosen = max(POOLINGS, key=lambda how: (by_method[f"chunks ({how})"]["validation"], how == "mean"))
    tokens = {name: [len(t.split()) for t in docs[name][0]] for name in docs}
    return {"bundle": f"{bundle.manifest.name} {bundle.manifest.version}", "limit": bundle.manifest.input.max_components,
            "overlap": bundle.manifest.input.chunk_overlap, "bundle_pooling": bundle.manifest.input.chunk_pooling,
            "documents": {n: len(d[0]) for n, d in docs.items()},
            "words_median": {n: int(np.median(t)) for n, t in tokens.items()},
            "windows": {n: {str(k): int(v) for k, v in zip(*np.unique(read[n]["windows"], return_counts=True))}
                        for n in docs},
            "test_longer_than_3_windows": int(long_test.sum()), "rows": rows, "chosen": chosen}


# ---- cost ------------------------------------------------------------------------------------


def token_count(tokenizer_path: Path, texts: list[str]) -> float:
    """Mean tokens of the texts' own (no [CLS]/[SEP], no overlap), uncut."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    return float(np.mean([len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]))


def run_cost(args) -> dict:
    from training.datasets.builtin import load_tweets

    bundle = load_bundle(args.bundle)
    long_texts = documents(args.seed)["test"][0]
    tweets = list(load_tweets(split_seed=0, limit=None).test.texts)[:2000]
    tokens = {"documents": token_count(bundle.tokenizer_path, long_texts), "tweets": token_count(bundle.tokenizer_path, tweets)}
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        bodies = {"documents": Path(tmp) / "documents.jsonl", "tweets": Path(tmp) / "tweets.jsonl"}
        bodies["documents"].write_text("".join(json.dumps({"inputs": [t], "chunk": True, "include": ["embedding"]}) + "\n"
                                               for t in long_texts))
        bodies["tweets"].write_text("".join(json.dumps({"inputs": [t], "include": ["embedding"]}) + "\n" for t in tweets))
        for limit_flags, label in (((), "service limit = bundle's"), (("--max-components-per-input", "64"), "service limit 64")):
            with running_service(bundle.path, *limit_flags, log_path=Path(tmp) / "service.log") as url:
                kinds = ("documents", "tweets") if not limit_flags else ("tweets",)
                for kind in kinds:
                    for clients in (8, 32):
                        result = run_load(url, "/v1/atomize", bodies[kind], clients, 1, args.duration)
                        point = {"inputs": kind, "setting": label, "clients": clients,
                                 "items_per_s": round(result["items_per_s"], 2),
                                 "tokens_per_s": round(result["items_per_s"] * tokens[kind], 1),
                                 "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "failed": result["failed"]}
                        log.info("%s", point)
                        points.append(point)
    return {"bundle": f"{bundle.manifest.name} {bundle.manifest.version}", "tokens_mean": tokens,
            "duration_s": args.duration, "points": points}


# ---- report ----------------------------------------------------------------------------------


def render(results: dict) -> str:
    lines = ["# Long documents: read whole in windows, or truncated", ""]
    quality = results.get("quality")
    if quality:
        lines += [f"`python benchmarks/documents.py --part quality` on {describe(quality['machine'])}. Bundle "
                  f"{quality['bundle']} (limit {quality['limit']} tokens, windows sharing {quality['overlap']}). "
                  f"Documents of 8-40 tweets of one label: {quality['documents']['train']} from the training split "
                  f"(the bank), {quality['documents']['validation']} validation, {quality['documents']['test']} test; "
                  f"median words {quality['words_median']['test']} (test). Windows per test document: "
                  f"{quality['windows']['test']}. A document's label: the majority of its {NEIGHBOURS} nearest "
                  "training documents, read the same way.", "",
                  "| reading | validation | test | test, longer than 3 windows |", "|---|---:|---:|---:|"]
        for row in quality["rows"]:
            lines.append(f"| {row['method']} | {row['validation']} | {row['test']} | "
                         f"{row['test_longer_than_3_windows'] if row['test_longer_than_3_windows'] is not None else '-'} |")
        lines += ["", f"Pooling chosen on validation: **{quality['chosen']}** (the bundle measured pools by "
                  f"{quality['bundle_pooling']}). Test documents longer than three windows: "
                  f"{quality['test_longer_than_3_windows']}.", ""]
    cost = results.get("cost")
    if cost:
        tokens = cost["tokens_mean"]
        lines += ["## Cost", "", f"`python benchmarks/documents.py --part cost` on {describe(cost['machine'])}. The "
                  f"service on 127.0.0.1, default settings, closed-loop clients, {cost['duration_s']:g} s a point, one "
                  f"input per request: test documents with \"chunk\": true ({tokens['documents']:.0f} tokens on "
                  f"average) or single test tweets ({tokens['tweets']:.1f} tokens).", "",
                  "| inputs | service | clients | items/s | tokens/s | p50 ms | p99 ms | failed |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for p in cost["points"]:
            lines.append(f"| {p['inputs']} | {p['setting']} | {p['clients']} | {p['items_per_s']} | {p['tokens_per_s']} "
                         f"| {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['failed']} |")
        by = {(p["inputs"], p["setting"], p["clients"]): p for p in cost["points"]}
        ours = "service limit = bundle's"
        if ("documents", ours, 32) in by and ("tweets", ours, 32) in by:
            ratio = by[("documents", ours, 32)]["tokens_per_s"] / by[("tweets", ours, 32)]["tokens_per_s"]
            lines += ["", f"Tokens/s on documents against tweets at 32 clients: **{ratio:.2f}** (target >= 0.8)."]
        if ("tweets", ours, 32) in by and ("tweets", "service limit 64", 32) in by:
            ratio = by[("tweets", ours, 32)]["items_per_s"] / by[("tweets", "service limit 64", 32)]["items_per_s"]
            lines += [f"Tweets at 32 clients, the bundle's limit against a limit of 64: {ratio:.2f}x the items/s "
                      "(padding is per batch: a short input should cost the same)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quality", "cost", "both"], default="both")
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tweets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per load point")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    path = args.out / "documents.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for part, run in (("quality", run_quality), ("cost", run_cost)):
        if args.part in (part, "both"):
            at_start = machine("CPUExecutionProvider")
            results[part] = {**run(args), "machine": at_start}
            path.write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "documents.md").write_text(render(results))
    print((args.out / "documents.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
